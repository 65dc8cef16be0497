"""Arbor simulators package."""

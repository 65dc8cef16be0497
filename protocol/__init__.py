"""Arbor protocol package."""

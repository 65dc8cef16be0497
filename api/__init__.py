"""Arbor api package."""

"""Arbor arbor package."""

"""Arbor analytics package."""

"""Arbor gateway package."""

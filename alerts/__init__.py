"""Arbor alerts package."""

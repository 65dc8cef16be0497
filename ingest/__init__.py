"""Arbor ingest package."""

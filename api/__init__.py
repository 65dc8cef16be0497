"""Arbor's REST API (FastAPI): auth with role-scoped API keys, operations, the signal catalogue,
accuracy reports and NC program distribution. Build it with :func:`api.app.create_app`."""

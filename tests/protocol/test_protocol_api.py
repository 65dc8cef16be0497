"""The public API: every exported name exists, and the package imports no I/O modules."""

from __future__ import annotations

import subprocess
import sys

import protocol


def test_all_names_exist_and_are_sorted() -> None:
    assert all(hasattr(protocol, name) for name in protocol.__all__)
    assert len(set(protocol.__all__)) == len(protocol.__all__)
    for name in ("decode", "encode", "parse_topic", "Telemetry", "CATALOGUE", "sparkplug"):
        assert name in protocol.__all__


def test_importing_protocol_pulls_in_no_network_or_service_code() -> None:
    # (``socket`` itself is imported by importlib.metadata via pydantic, so it is not checked.)
    code = (
        "import sys, protocol; "
        "bad = [m for m in ('asyncio', 'paho', 'psycopg', 'asyncpg', 'httpx', "
        "'ingest', 'gateway', 'api', 'simulators') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""`arbor api [--host H] [--port P] [--tls-cert F --tls-key F] [--workers N]`: serve the API with
uvicorn (default http://127.0.0.1:8080; HTTPS with a certificate and key, docs/security.md).

With `--workers N` uvicorn runs N processes on the one socket, each with its own app (database
pool, broker links, rate limits, list snapshot; docs/api.md says what that means)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["run"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arbor api", description="Serve the Arbor REST API.")
    p.add_argument("--host", help="address to listen on (default ARBOR_API_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default ARBOR_API_PORT or 8080)")
    p.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (ARBOR_API_TLS_CERT)")
    p.add_argument("--tls-key", help="the certificate's PEM private key (ARBOR_API_TLS_KEY)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("ARBOR_API_WORKERS", "1")),
        help="server processes (default ARBOR_API_WORKERS or 1)",
    )
    return p


def run(argv: list[str]) -> int:
    """Parse `argv` (after the word `api`), build the settings and serve until interrupted."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    # Imported here so that `--help` answers at once.
    import uvicorn
    from pydantic import ValidationError

    from api.app import create_app
    from api.config import ApiSettings

    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["api_host"] = args.host
    if args.port is not None:
        overrides["api_port"] = args.port
    if args.tls_cert is not None:
        overrides["api_tls_cert"] = args.tls_cert
    if args.tls_key is not None:
        overrides["api_tls_key"] = args.tls_key
    try:
        settings = ApiSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            print(f"arbor api: {field}: {err['msg']}", file=sys.stderr)
        return 2
    for path in (settings.api_tls_cert, settings.api_tls_key):
        if path and not os.access(path, os.R_OK):
            print(f"arbor api: cannot read {path}", file=sys.stderr)
            return 2
    serving: dict[str, Any] = {
        "host": settings.api_host,
        "port": settings.api_port,
        "log_level": args.log_level,
        "proxy_headers": False,
        "ssl_certfile": settings.api_tls_cert or None,
        "ssl_keyfile": settings.api_tls_key or None,
    }
    if args.workers > 1:
        # Each worker process builds its app from the environment: hand it the options too.
        for name, value in overrides.items():
            os.environ[f"ARBOR_{name.upper()}"] = str(value)
        uvicorn.run("api.app:app_from_environment", factory=True, workers=args.workers, **serving)
        return 0
    uvicorn.Server(uvicorn.Config(create_app(settings), **serving)).run()
    return 0

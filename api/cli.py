"""`arbor api [--host H] [--port P]`: serve the API with uvicorn (default 127.0.0.1:8080)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["run"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arbor api", description="Serve the Arbor REST API.")
    p.add_argument("--host", help="address to listen on (default ARBOR_API_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default ARBOR_API_PORT or 8080)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
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
    try:
        settings = ApiSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            print(f"arbor api: {field}: {err['msg']}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_level=args.log_level,
        proxy_headers=False,
    )
    uvicorn.Server(config).run()
    return 0

"""The web dashboard: `/` (the single page), `/ui/...` (its own modules) and `/vendor/...`.

The page and its modules are files in `api/dashboard/` (plain ES modules, no build step); the
third-party assets (uPlot) are unpacked by `deploy/web-assets.sh` into `.arbor/web/vendor/`
(`$ARBOR_STATE_DIR/web/vendor`) and served from there, so nothing is loaded from a CDN.

The files themselves are public, like any static site: the data behind them needs an API key,
which the page asks for and sends as `Authorization: Bearer`. None of these routes is in the
OpenAPI document (they are not part of the API) nor in `api.app.ROUTERS`.

Caching: every answer carries a strong `ETag` (size and modification time) and answers
`If-None-Match` with 304. The page and its modules are `no-cache` (always revalidated, so a
deploy is seen at the next load); vendor files are pinned by version and cached for a day.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi import Path as PathParam
from fastapi.responses import Response

from api.errors import NotFoundError
from arbor.paths import state_dir

__all__ = ["APP_CACHE", "DASHBOARD_DIR", "VENDOR_CACHE", "router", "vendor_dir"]

#: The dashboard's own files (committed).
DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"

#: Cache-Control of the page and its modules: revalidate every time (cheap: 304 by ETag).
APP_CACHE = "no-cache"
#: Cache-Control of the pinned vendor files.
VENDOR_CACHE = "public, max-age=86400"

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

router = APIRouter(include_in_schema=False)


def vendor_dir() -> Path:
    """Where `deploy/web-assets.sh` unpacks the vendor assets."""
    return state_dir() / "web" / "vendor"


def _file_in(root: Path, relative: str) -> Path:
    """`root/relative` when it is a regular file inside `root`; 404 otherwise (no `..` escapes)."""
    if not relative or relative.startswith("/") or "\\" in relative or "\x00" in relative:
        raise NotFoundError(f"no file {relative!r}")
    root = root.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root) or not path.is_file() or path.name.startswith("."):
        raise NotFoundError(f"no file {relative!r}")
    return path


def _send(path: Path, cache_control: str, if_none_match: str | None) -> Response:
    stat = path.stat()
    etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    headers = {
        "ETag": etag,
        "Cache-Control": cache_control,
        "X-Content-Type-Options": "nosniff",
    }
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=304, headers=headers)
    media_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    return Response(
        path.read_bytes(), media_type=media_type or "application/octet-stream", headers=headers
    )


IfNoneMatch = Annotated[str | None, Header()]
FilePath = Annotated[str, PathParam(max_length=300)]


@router.get("/")
async def index(if_none_match: IfNoneMatch = None) -> Response:
    """The single page; each view is a `#/...` route inside it."""
    response = _send(DASHBOARD_DIR / "index.html", APP_CACHE, if_none_match)
    # The page runs only its own scripts, talks only to this origin and is never framed.
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'"
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.get("/ui/{path:path}")
async def ui_file(path: FilePath, if_none_match: IfNoneMatch = None) -> Response:
    """The dashboard's own modules and styles (`api/dashboard/`)."""
    return _send(_file_in(DASHBOARD_DIR, path), APP_CACHE, if_none_match)


@router.get("/vendor/{path:path}")
async def vendor_file(path: FilePath, if_none_match: IfNoneMatch = None) -> Response:
    """Vendor assets installed by `deploy/web-assets.sh` (404 until it has run)."""
    return _send(_file_in(vendor_dir(), path), VENDOR_CACHE, if_none_match)

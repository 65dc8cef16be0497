"""API errors and the one JSON shape every 4xx/5xx answer has.

    ApiError                      500 internal
     ├── UnauthorizedError        401 unauthorized     (no key, unknown, malformed or revoked key)
     ├── ForbiddenError           403 forbidden        (role or site scope does not admit the call)
     ├── NotFoundError            404 not_found        (or a specific code: machine_not_found)
     ├── ConflictError            409 conflict         (or program_version_exists, ...)
     ├── PayloadTooLargeError     413 payload_too_large
     ├── InvalidInputError        422 invalid_input    (names the field)
     ├── RateLimitedError         429 rate_limited     (with Retry-After)
     └── UnavailableError         503 unavailable      (database or broker unreachable)

Body: ``{"error": {"code": "stable_code", "message": "for people", "field": "where" | null}}``.
Codes are stable and documented in docs/api.md; messages may change.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

__all__ = [
    "AUTHENTICATED",
    "ApiError",
    "ConflictError",
    "ErrorBody",
    "ErrorDetail",
    "ForbiddenError",
    "InvalidInputError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "UnauthorizedError",
    "UnavailableError",
    "error_responses",
    "install_error_handlers",
]

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


class ApiError(Exception):
    """Base of the API's errors; `status` and `code` are class defaults a raise may override."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def headers(self) -> dict[str, str]:
        return {}


class UnauthorizedError(ApiError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ForbiddenError(ApiError):
    status = 403
    code = "forbidden"


class NotFoundError(ApiError):
    status = 404
    code = "not_found"


class ConflictError(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLargeError(ApiError):
    status = 413
    code = "payload_too_large"


class InvalidInputError(ApiError):
    status = 422
    code = "invalid_input"


class RateLimitedError(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class UnavailableError(ApiError):
    status = 503
    code = "unavailable"


def _body(code: str, message: str, field: str | None = None) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "field": field}})


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def error_response(status: int, code: str, message: str) -> Response:
    """An error answer made outside the app's handlers (by ASGI middleware), same shape."""
    return _json(status, _body(code, message), {"Connection": "close"})


def _field(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """`("body", "data", "up", 2)` -> `data.up[2]`: the request part (body, query...) is dropped."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or str(loc[0] if loc else "")


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    """Route every error, ours and the framework's, into the one JSON shape."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _json(exc.status, _body(exc.code, exc.message, exc.field), exc.headers())

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors: list[dict[str, Any]] = list(exc.errors())
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field(tuple(first.get("loc", ())))
        message = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg"))
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more)"
        return _json(422, _body("validation_error", message, field or None))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return _json(exc.status_code, _body(code, str(exc.detail)), dict(exc.headers or {}))

    async def data_error(request: Request, exc: Exception) -> Response:
        # Input the schema allowed but PostgreSQL cannot store, e.g. a NUL character in text
        # (class 22, data exception): the client's input, so 422, not a server fault.
        log.info("data exception in %s %s: %s", request.method, request.url.path, exc)
        message = f"the input cannot be stored: {getattr(exc, 'message', exc)}"
        return _json(422, _body("invalid_input", message))

    async def database_down(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable in %s %s: %s", request.method, request.url.path, exc)
        return _json(503, _body("database_unavailable", "the database is unreachable"))

    async def unexpected(request: Request, exc: Exception) -> Response:
        # The one place a bare Exception is caught: the request's top. The server logs it too.
        log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return _json(500, _body("internal", "internal error; see the server log"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(asyncpg.DataError, data_error)
    app.add_exception_handler(asyncpg.exceptions.ConnectionDoesNotExistError, database_down)
    app.add_exception_handler(asyncpg.exceptions.CannotConnectNowError, database_down)
    app.add_exception_handler(Exception, unexpected)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries with the error body, for the statuses a route may answer."""
    descriptions = {
        401: "no valid API key",
        403: "the key's role or site scope does not admit this call",
        404: "not found",
        409: "conflict",
        413: "payload too large",
        422: "invalid input; `field` names it",
        429: "rate limited; see Retry-After",
        503: "database or broker unavailable",
    }
    return {s: {"model": ErrorBody, "description": descriptions.get(s, "error")} for s in statuses}


#: The errors any route behind a key may answer (mounted on each authenticated router).
AUTHENTICATED = error_responses(401, 403, 422, 429, 503)

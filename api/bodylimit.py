"""A cap on request bodies, enforced before anything is parsed.

Without it an upload of any size is read into memory whole before validation can refuse it.
A declared ``Content-Length`` over the cap is answered 413 at once, without reading the body;
a body sent without one (chunked) is counted as it arrives and refused at the first byte over
the cap. The answer is the API's one error shape, code ``payload_too_large``.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response

__all__ = ["BodyLimitMiddleware"]


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException, so FastAPI's body parsing passes it through."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self, size: str) -> str:
        return f"request body is {size}; the limit is {self.max_bytes} bytes (api_max_body_bytes)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            if not declared.isdigit():
                response = error_response(400, "bad_request", "Content-Length is not a number")
                await response(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                message = self._message(f"{int(declared)} bytes")
                await error_response(413, "payload_too_large", message)(scope, receive, send)
                return
        seen = 0
        limit = self.max_bytes
        message_over = self._message("larger")

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(413, message_over)
            return message

        await self.app(scope, counted, send)

"""Webhooks: a JSON body, signed with HMAC-SHA256 over the timestamp and the exact body.

Headers sent with every POST:

    Content-Type:      application/json
    X-Arbor-Event:     alert.opened | alert.acknowledged | alert.escalated | alert.resolved
    X-Arbor-Delivery:  the delivery id (the same on every retry: receivers dedupe on it)
    X-Arbor-Timestamp: Unix seconds when this attempt was signed
    X-Arbor-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>

A receiver recomputes the HMAC over the raw body bytes it received, compares in constant time,
and rejects timestamps more than 5 minutes away from its clock (replay protection); see
`verify()` and docs/alerts.md.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx

from alerts.errors import DeliveryError

__all__ = ["post", "sign", "verify"]

SIGNATURE_HEADER = "X-Arbor-Signature"
TIMESTAMP_HEADER = "X-Arbor-Timestamp"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 keyed with `secret` over `b"<timestamp>." + body`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: str,
    body: bytes,
    timestamp_header: str,
    signature_header: str,
    *,
    now: float | None = None,
    tolerance_s: float = 300.0,
) -> bool:
    """The receiver's check: a fresh timestamp and a matching signature over the exact body."""
    try:
        ts = int(timestamp_header)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature_header)


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    *,
    secret: str | None,
    event: str,
    delivery_id: int,
    timeout_s: float,
) -> int:
    """POST `body` to `url`; returns the status, raises `DeliveryError` unless it is 2xx."""
    ts = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "arbor-alerts/1",
        "X-Arbor-Event": event,
        "X-Arbor-Delivery": str(delivery_id),
        TIMESTAMP_HEADER: str(ts),
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, ts, body)
    try:
        response = await client.post(url, content=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        # The URL may carry credentials in its query: name the host only.
        host = httpx.URL(url).host
        raise DeliveryError(f"POST to {host} failed: {type(exc).__name__}: {exc}") from exc
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"receiver answered {response.status_code}", response.status_code)
    return response.status_code

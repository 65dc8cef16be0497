"""`GET /api/v1/stream` (WebSocket): live machine status and chosen telemetry for the dashboard.

The protocol (docs/api.md, "Live stream") in short: authenticate with `?key=`, an
`Authorization: Bearer` header, or a first message `{"type": "auth", "key": ...}`; the server
answers `ready`. Then `{"type": "subscribe", "machines": [...] | ["*"], "sites"?: [...],
"signals"?: [...]}` (each replaces the last); the server answers `subscribed`, a `status`
snapshot per machine, then `status` on every change and `telemetry` at most `rate_hz` times a
second. Errors in a message answer `{"type": "error", ...}` and keep the connection; failed
authentication and slow consumers are closed with the codes in `CLOSE_CODES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from api.deps import MachineRef, Principal, authenticate, resolve_machine
from api.errors import ApiError, InvalidInputError
from api.keys import ALL_ROLES
from api.machines import STATUS_SQL
from api.state import ApiState
from api.stream import Client, LiveMachine, StreamHub, Subscription
from protocol import SignalChannel, get_signal, is_vendor_signal

__all__ = ["CLOSE_CODES", "STREAM_ROLES", "router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["stream"])

#: Who may open the stream (docs/api.md's role table says the same).
STREAM_ROLES = ALL_ROLES

#: Application close codes (4000-4999) and their reasons; 1001 = the server is shutting down.
CLOSE_CODES = {
    "slow_consumer": 4100,
    "bad_message": 4400,
    "unauthorized": 4401,
    "forbidden": 4403,
    "rate_limited": 4429,
    "unavailable": 4503,
}
_MAX_SIGNALS = 16
_CLOSE_GRACE_S = 10.0
_SUBSCRIBED_SQL = (
    STATUS_SQL  # noqa: S608 (constant fragments only)
    + """ WHERE ($1 AND ($2::text[] IS NULL OR m.site = ANY($2)))
             OR (m.site, m.machine) IN (SELECT * FROM unnest($3::text[], $4::text[]))
          ORDER BY m.site, m.machine"""
)
_MAX_MESSAGE_BYTES = 64 * 1024
_ID = r"[a-z0-9][a-z0-9_-]{0,63}"


class _SlowConsumerError(Exception):
    pass


class _CloseError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _dumps(message: dict[str, Any]) -> str:
    return orjson.dumps(message, option=orjson.OPT_UTC_Z).decode()


def _close_for(exc: ApiError) -> _CloseError:
    reason = {401: "unauthorized", 403: "forbidden", 429: "rate_limited", 503: "unavailable"}
    return _CloseError(reason.get(exc.status, "unavailable"), f"{exc.code}: {exc.message}")


async def _receive_json(ws: WebSocket) -> Any:
    text = await ws.receive_text()
    if len(text) > _MAX_MESSAGE_BYTES:
        raise InvalidInputError("a message may have at most 64 KiB", field="message")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"not JSON: {exc}", field="message") from exc


async def _authenticate(ws: WebSocket, api: ApiState) -> Principal:
    key = ws.query_params.get("key")
    header = ws.headers.get("authorization", "")
    if key is None and header.lower().startswith("bearer "):
        key = header[7:].strip()
    if key is None:
        try:
            async with asyncio.timeout(api.settings.api_stream_auth_timeout_s):
                first = await _receive_json(ws)
        except TimeoutError as exc:
            raise _CloseError("unauthorized", "no auth message in time") from exc
        except InvalidInputError as exc:
            raise _CloseError("unauthorized", exc.message) from exc
        if not isinstance(first, dict) or first.get("type") != "auth":
            raise _CloseError("unauthorized", 'the first message must be {"type": "auth", ...}')
        key = first.get("key")
        if not isinstance(key, str):
            raise _CloseError("unauthorized", "auth: key must be a string")
    try:
        return await authenticate(api, key, STREAM_ROLES)
    except ApiError as exc:
        raise _close_for(exc) from exc


def _signals(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise InvalidInputError("signals must be a list of signal names", field="signals")
    if len(value) > _MAX_SIGNALS:
        raise InvalidInputError(f"at most {_MAX_SIGNALS} signals", field="signals")
    for k, name in enumerate(value):
        signal = get_signal(name)
        if not is_vendor_signal(name) and (
            signal is None or signal.channel is not SignalChannel.TELEMETRY
        ):
            raise InvalidInputError(
                f"{name!r} is not a telemetry signal of the catalogue", field=f"signals[{k}]"
            )
    return frozenset(value)


async def _subscription(
    api: ApiState, principal: Principal, message: dict[str, Any]
) -> tuple[Subscription, list[LiveMachine]]:
    """The subscription `message` asks for and the database's state of its machines."""
    machines = message.get("machines")
    sites = message.get("sites")
    signals = _signals(message.get("signals"))
    if not isinstance(machines, list) or not all(isinstance(m, str) for m in machines):
        raise InvalidInputError('machines must be a list ("site:machine" or "*")', field="machines")
    if sites is not None and (
        not isinstance(sites, list) or not all(isinstance(s, str) for s in sites)
    ):
        raise InvalidInputError("sites must be a list of site ids", field="sites")
    if len(machines) > api.settings.api_stream_max_machines:
        raise InvalidInputError(
            f"at most {api.settings.api_stream_max_machines} machines", field="machines"
        )
    wildcard = "*" in machines
    scope: frozenset[str] | None = None if sites is None else frozenset(sites)
    if principal.sites is not None:
        scope = principal.sites if scope is None else scope & principal.sites
    async with api.pool.acquire(timeout=api.settings.api_db_timeout_s) as conn:
        refs: list[MachineRef] = []
        for k, ref in enumerate(m for m in machines if m != "*"):
            try:
                refs.append(await resolve_machine(conn, principal, ref))
            except ApiError as exc:
                exc.field = f"machines[{k}]"
                raise
        keys = {(r.site, r.machine) for r in refs}
        rows = await conn.fetch(
            _SUBSCRIBED_SQL,
            wildcard,
            None if scope is None else sorted(scope),
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        if len(rows) > api.settings.api_stream_max_machines:
            raise InvalidInputError(
                f"the subscription covers {len(rows)} machines; at most "
                f"{api.settings.api_stream_max_machines}",
                field="machines",
            )
        alarms = await conn.fetch(
            """SELECT m.site, m.machine, a.component, a.code, a.level, a.text, a.opened_at
                 FROM alarm a JOIN machine m ON m.id = a.machine_id
                WHERE a.closed_at IS NULL
                  AND (m.site, m.machine) IN (SELECT * FROM unnest($1::text[], $2::text[]))""",
            [r["site"] for r in rows],
            [r["machine"] for r in rows],
        )
    seed = {
        (r["site"], r["machine"]): LiveMachine(
            site=r["site"],
            machine=r["machine"],
            status=r["status"],
            online=r["online"],
            last_seen=r["last_seen"],
            status_since=r["status_since"],
            execution=r["execution"],
            execution_since=r["execution_since"],
            mode=r["mode"],
            program=r["program"],
            part_count=r["part_count"],
        )
        for r in rows
    }
    for a in alarms:
        seed[(a["site"], a["machine"])].alarms[(a["component"], a["code"])] = {
            "component": a["component"],
            "code": a["code"],
            "level": a["level"],
            "text": a["text"],
            "opened_at": a["opened_at"],
        }
    subscription = Subscription(
        machines=frozenset(keys), wildcard=wildcard, sites=scope, signals=signals
    )
    return subscription, list(seed.values())


async def _sender(ws: WebSocket, client: Client, api: ApiState) -> None:
    """Send queued status at once and telemetry at most `rate_hz` times a second."""
    outbox = client.outbox
    interval = 1.0 / api.settings.api_stream_rate_hz
    timeout = api.settings.api_stream_send_timeout_s
    next_flush = time.monotonic()

    async def send(message: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(timeout):
                await ws.send_text(_dumps(message))
        except TimeoutError as exc:
            raise _SlowConsumerError from exc

    while True:
        wait = max(0.0, next_flush - time.monotonic()) if outbox.has_telemetry else None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await outbox.wakeup.wait()
        outbox.wakeup.clear()
        for message in outbox.take_control() + outbox.take_status():
            await send(message)
        if outbox.has_telemetry and time.monotonic() >= next_flush:
            for message in outbox.take_telemetry():
                await send(message)
            next_flush = time.monotonic() + interval


async def _receiver(ws: WebSocket, client: Client, api: ApiState, principal: Principal) -> None:
    hub = cast(StreamHub, api.stream)
    while True:
        try:
            message = await _receive_json(ws)
            if not isinstance(message, dict) or message.get("type") not in ("subscribe", "ping"):
                raise InvalidInputError(
                    'expected {"type": "subscribe", ...} or {"type": "ping"}', field="type"
                )
            if message["type"] == "ping":
                client.outbox.put_control({"type": "pong", "id": message.get("id")})
                continue
            subscription, seed = await _subscription(api, principal, message)
        except ApiError as exc:
            client.outbox.put_control(
                {"type": "error", "code": exc.code, "message": exc.message, "field": exc.field}
            )
            continue
        client.outbox.put_control(
            {
                "type": "subscribed",
                "machines": [f"{m.site}:{m.machine}" for m in seed],
                "signals": sorted(subscription.signals),
            }
        )
        hub.subscribe(client, subscription, seed)


@router.websocket("/stream")
async def stream(ws: WebSocket) -> None:
    """Live machine status and chosen telemetry (see the module doc and docs/api.md)."""
    api = cast(ApiState, ws.state.api)
    await ws.accept()
    hub = api.stream
    client: Client | None = None
    try:
        if hub is None:
            raise _CloseError("unavailable", "the live stream needs the broker (ARBOR_MQTT_URL)")
        principal = await _authenticate(ws, api)
        client = hub.add_client()
        api.metrics.stream_clients.inc()
        await ws.send_text(
            _dumps(
                {
                    "type": "ready",
                    "key": {
                        "id": principal.key_id,
                        "role": str(principal.role),
                        "sites": None if principal.sites is None else sorted(principal.sites),
                    },
                    "limits": {
                        "rate_hz": api.settings.api_stream_rate_hz,
                        "queue_samples": api.settings.api_stream_queue_samples,
                        "max_machines": api.settings.api_stream_max_machines,
                        "max_signals": _MAX_SIGNALS,
                        "send_timeout_s": api.settings.api_stream_send_timeout_s,
                    },
                    "broker_connected": hub.connected,
                }
            )
        )
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(_sender(ws, client, api), name="stream_sender")
            tasks.create_task(_receiver(ws, client, api, principal), name="stream_receiver")
    except* WebSocketDisconnect:
        pass
    except* _SlowConsumerError:
        api.metrics.stream_disconnects.labels("slow_consumer").inc()
        log.warning("stream: disconnecting a slow consumer (%s)", ws.client)
        await _close(
            ws, "slow_consumer", "the client did not read its messages in time", _CLOSE_GRACE_S
        )
    except* _CloseError as group:
        exc = group.exceptions[0]
        assert isinstance(exc, _CloseError)
        api.metrics.stream_disconnects.labels(exc.reason).inc()
        await _close(ws, exc.reason, exc.message, _CLOSE_GRACE_S)
    finally:
        if client is not None and hub is not None:
            hub.remove_client(client)
            api.metrics.stream_clients.dec()
            api.metrics.stream_dropped.inc(client.outbox.dropped_total)


async def _close(ws: WebSocket, reason: str, message: str, grace_s: float) -> None:
    """Close with the reason's code. A close frame queues behind what the client has not read
    yet: a slow client that reads within `grace_s` sees the code, a stuck one is dropped."""
    if ws.client_state is WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect, TimeoutError):
        async with asyncio.timeout(grace_s):
            await ws.close(code=CLOSE_CODES[reason], reason=f"{reason}: {message}"[:120])

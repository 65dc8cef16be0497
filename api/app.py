"""The FastAPI application: `create_app(settings)` builds it; the lifespan opens its resources.

Routes live under `/api/v1` (`api/routes/<resource>.py`), plus `/healthz` and `/metrics` at the
root; the OpenAPI document is `/openapi.json`, browsable at `/docs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from api.bodylimit import BodyLimitMiddleware
from api.config import ApiSettings
from api.errors import install_error_handlers
from api.fleetlist import FleetList
from api.keycache import KeyCache
from api.metrics import ApiMetrics, MetricsMiddleware
from api.mqtt import BrokerLink
from api.ratelimit import RateLimiter
from api.routes import (
    accuracy,
    alerts,
    audit,
    calendars,
    catalogue,
    dashboard,
    downtime,
    machines,
    me,
    operations,
    programs,
    stream,
    tools,
)
from api.singleflight import SingleFlight
from api.state import ApiState
from api.stream import StreamHub

__all__ = ["API_PREFIX", "ROUTERS", "WEBSOCKET_ROUTERS", "app_from_environment", "create_app"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"

#: Every router and where it is mounted (the authorisation test walks this list).
ROUTERS: list[tuple[str, APIRouter]] = [
    ("", operations.root),
    (API_PREFIX, operations.router),
    (API_PREFIX, me.router),
    (API_PREFIX, catalogue.router),
    (API_PREFIX, machines.router),
    (API_PREFIX, calendars.router),
    (API_PREFIX, downtime.router),
    (API_PREFIX, tools.router),
    (API_PREFIX, accuracy.router),
    (API_PREFIX, programs.router),
    (API_PREFIX, audit.router),
    (API_PREFIX, alerts.router),
]

#: WebSocket routers (not in the OpenAPI document; they authenticate in the handler, see
#: api/routes/stream.py, and tests/api/test_stream.py checks every role).
WEBSOCKET_ROUTERS: list[tuple[str, APIRouter]] = [(API_PREFIX, stream.router)]


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=lambda v: orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset between requests: nothing beyond asyncpg's own (it rolls back a
    transaction left open). The default also sends `RESET ALL; UNLISTEN *; CLOSE ALL;
    pg_advisory_unlock_all()`: a round trip per request, and on this 2-core VM each write to
    PostgreSQL's socket costs the API ~0.35 ms of CPU (cProfile, 20 clients). The API leaves no
    session state to reset: settings only as SET LOCAL / set_config(..., true), advisory locks
    only per transaction (pg_advisory_xact_lock), no LISTEN, no cursors outside transactions."""


async def _reply_loop(state: ApiState) -> None:
    """Store every command reply the broker hands over; one bad reply never stops the loop."""
    assert state.broker is not None
    while True:
        item = await state.broker.replies.get()
        try:
            outcome = await programs.handle_reply(state.pool, item.topic, item.payload)
        except Exception:  # the loop's top: log, count and carry on
            log.exception("storing the reply on %s failed", item.topic)
            outcome = "error"
        state.metrics.replies.labels(outcome).inc()


def create_app(settings: ApiSettings) -> FastAPI:
    """The API for `settings`; nothing is opened until the server runs the lifespan."""
    metrics = ApiMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # min_size may be 0 so that the API starts (and /healthz reports) with the database down.
        pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=settings.api_pool_min,
            max_size=settings.api_pool_max,
            command_timeout=settings.api_db_timeout_s,
            timeout=settings.api_db_timeout_s,
            init=_init_connection,
            reset=_keep_session,
        )
        broker: BrokerLink | None = None
        if settings.mqtt_url:
            broker = BrokerLink(settings.mqtt_url, timeout_s=settings.api_mqtt_timeout_s)
            broker.start()
            # Start ready when the broker is there; a broker that is down only delays the start
            # a little (the API serves without it and /healthz says so).
            if not await broker.wait_connected(min(3.0, settings.api_mqtt_timeout_s)):
                log.warning("broker %s not reachable yet; continuing without it", broker.endpoint)
        hub: StreamHub | None = None
        if settings.mqtt_url:
            hub = StreamHub(
                settings.mqtt_url,
                silence_timeout_s=settings.api_stream_silence_timeout_s,
                queue_samples=settings.api_stream_queue_samples,
            )
            hub.start()
        state = ApiState(
            settings=settings,
            pool=pool,
            broker=broker,
            limiter=RateLimiter(settings.api_rate_per_s, settings.api_rate_burst),
            metrics=metrics,
            stream=hub,
            fleet_list=FleetList(settings.api_list_cache_s),
            key_cache=KeyCache(settings.api_auth_cache_s),
            fleet_flights=SingleFlight(metrics.coalesced.labels(API_PREFIX + "/utilisation").inc),
        )
        replies = asyncio.create_task(_reply_loop(state), name="reply_loop") if broker else None
        try:
            yield {"api": state}
        finally:
            if replies is not None:
                replies.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await replies
            if broker is not None:
                await broker.stop()
            if hub is not None:
                await hub.stop()
            await pool.close()

    app = FastAPI(
        title="Arbor API",
        version="1",
        summary="Machine-tool IoT: machines, telemetry, KPIs, accuracy checks, NC programs",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    templates: dict[Any, str] = {}
    for prefix, router in ROUTERS:
        app.include_router(router, prefix=prefix)
        templates |= {r.endpoint: prefix + r.path for r in router.routes if isinstance(r, APIRoute)}
    app.include_router(dashboard.router)  # the web dashboard at / (not an API route)
    for prefix, router in WEBSOCKET_ROUTERS:
        app.include_router(router, prefix=prefix)
    app.add_middleware(MetricsMiddleware, metrics=metrics, templates=templates)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    return app


def app_from_environment() -> FastAPI:
    """The app of one `arbor api --workers N` process: settings from ARBOR_* (as the CLI set)."""
    return create_app(ApiSettings())  # type: ignore[call-arg]

"""Prometheus metrics of one API app, in a registry of its own (no process-global state)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ApiMetrics", "MetricsMiddleware"]


class ApiMetrics:
    """Request counts and latencies by route template (never by raw path: ids would explode it)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "arbor_api_requests",
            "API requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "arbor_api_request_seconds",
            "API request latency by method and route template",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.program_chunks = Counter(
            "arbor_api_program_chunks_sent", "cmd/program chunks published", registry=self.registry
        )
        self.stream_clients = Gauge(
            "arbor_api_stream_clients", "connected live-stream clients", registry=self.registry
        )
        self.stream_disconnects = Counter(
            "arbor_api_stream_disconnects",
            "live-stream connections closed by the server, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.stream_dropped = Counter(
            "arbor_api_stream_dropped_samples",
            "telemetry samples dropped from stream clients' queues (drop oldest)",
            registry=self.registry,
        )
        self.coalesced = Counter(
            "arbor_api_coalesced_requests",
            "requests answered by a computation another identical request started (single flight)",
            ["route"],
            registry=self.registry,
        )
        self.replies = Counter(
            "arbor_api_replies",
            "command replies received by outcome",
            ["outcome"],
            registry=self.registry,
        )


class MetricsMiddleware:
    """Pure ASGI middleware: unlike BaseHTTPMiddleware it leaves streaming and WebSockets alone."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, templates: dict[Any, str]) -> None:
        self.app = app
        self.metrics = metrics
        # endpoint function -> its full path template; routing leaves the endpoint in the scope.
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = self.templates.get(scope.get("endpoint"))
            if template is None:
                template = getattr(scope.get("route"), "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - start)

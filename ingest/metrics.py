"""Prometheus metrics of one ingest worker (served on ``metrics_port + worker_index``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["IngestMetrics"]

_LATENCY_BUCKETS = (
    0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0,
    3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0,
)  # fmt: skip


class IngestMetrics:
    """The worker's counters, on a registry of its own (tests build several workers)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "arbor_ingest_messages", "MQTT messages by outcome", ["outcome"], registry=r
        )
        self.values = Counter("arbor_ingest_values", "Signal values stored", registry=r)
        self.rows = Counter("arbor_ingest_rows", "Rows written by table", ["table"], registry=r)
        self.batches = Counter("arbor_ingest_batches", "Batches committed", registry=r)
        self.dead_letters = Counter(
            "arbor_ingest_dead_letters", "Dead-lettered messages by kind", ["kind"], registry=r
        )
        self.gaps = Counter("arbor_ingest_gaps", "Sequence gaps recorded", registry=r)
        self.write_errors = Counter(
            "arbor_ingest_write_errors", "Failed batch commits (retried)", registry=r
        )
        self.commit_seconds = Histogram(
            "arbor_ingest_commit_seconds", "Batch transaction time", buckets=_LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "arbor_ingest_latency_seconds",
            "Source timestamp of a message's newest sample to its commit",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.lag = Gauge(
            "arbor_ingest_lag_seconds", "Age of the oldest received, uncommitted message",
            registry=r,
        )  # fmt: skip
        self.subscribed = Gauge(
            "arbor_ingest_subscribed",
            "1 once the broker acknowledged the worker's subscriptions (readiness), 0 otherwise",
            registry=r,
        )
        self.anchor_recovering = Gauge(
            "arbor_ingest_anchor_recovering",
            "1 while the anchor subscription's copies are being stored (after a (re)connect, "
            "until the anchor's marker came back), 0 otherwise",
            registry=r,
        )
        self.anchor_skipped = Gauge(
            "arbor_ingest_anchor_skipped",
            "Anchor copies acked unprocessed since start (the shared subscription had them)",
            registry=r,
        )
        self.sparkplug_skipped = Gauge(
            "arbor_ingest_sparkplug_skipped_metrics",
            "Sparkplug metrics of accepted messages not stored since start, by reason "
            "(docs/ingest.md; every worker sees, and counts, every Sparkplug message)",
            ["reason"],
            registry=r,
        )
        self.pending = Gauge(
            "arbor_ingest_unacked_messages", "Messages received and not yet acked", registry=r
        )
        self.batch_size = Histogram(
            "arbor_ingest_batch_messages", "Messages per batch",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000), registry=r,
        )  # fmt: skip

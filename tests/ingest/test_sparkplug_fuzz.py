"""Random Sparkplug sessions (every datatype code 0..39 against every value field, DataSets,
nested templates, properties, flags, odd timestamps and seqs) through the decoder: never an
`internal` dead letter, never a NUL in stored text, every metric stored or skipped with a
reason."""

from __future__ import annotations

import random
import time
from typing import Any

from ingest.config import IngestSettings
from ingest.decode import Decoder
from ingest.records import Ack, Raw
from ingest.sparkplug import SKIP_REASONS
from protocol.sparkplug import PayloadPb

rnd = random.Random(1)
FIELDS: list[Any] = [
    "int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value",
    "bytes_value", None, "dataset", "template",
]  # fmt: skip


def val(field: str) -> Any:
    return {
        "int_value": rnd.randrange(2**32),
        "long_value": rnd.randrange(2**64),
        "float_value": rnd.choice([1.5, float("nan"), float("inf"), -0.0, 3.4e38]),
        "double_value": rnd.choice([1e308, float("nan"), -1.0]),
        "boolean_value": rnd.random() < 0.5,
        "string_value": rnd.choice(["", "a\x00b", "é", "x" * 300]),
        "bytes_value": bytes(rnd.randrange(256) for _ in range(rnd.randrange(12))),
    }[field]


def metric(pb: Any, now: int, named: bool) -> None:
    m = pb.metrics.add()
    if named or rnd.random() < 0.3:
        m.name = rnd.choice(
            ["A", "Spindle/Speed", "Execution", "x/y", "bdSeq", "Node Control/Rebirth", "T"]
        )
    if rnd.random() < 0.7:
        m.alias = rnd.randrange(8)
    if rnd.random() < 0.8:
        m.datatype = rnd.randrange(40)
    if rnd.random() < 0.7:
        m.timestamp = (
            now + rnd.randrange(-(10**6), 10**6) if rnd.random() < 0.9 else rnd.randrange(2**64)
        )
    m.is_historical = rnd.random() < 0.2
    m.is_transient = rnd.random() < 0.1
    m.is_null = rnd.random() < 0.1
    f = rnd.choice(FIELDS)
    if f == "dataset":
        ds = m.dataset_value
        n = rnd.randrange(3)
        ds.columns.extend(["c"] * n)
        ds.types.extend([rnd.randrange(40) for _ in range(rnd.randrange(4))])
        for _ in range(rnd.randrange(3)):
            r = ds.rows.add()
            for _ in range(rnd.randrange(4)):
                e = r.elements.add()
                ff = rnd.choice(FIELDS[:6])
                setattr(e, ff, val(ff))
    elif f == "template":
        t = m.template_value
        t.is_definition = rnd.random() < 0.3
        if rnd.random() < 0.5:
            t.template_ref = rnd.choice(["A", "T", "zz"])
        for _ in range(rnd.randrange(3)):
            metric(t, now, rnd.random() < 0.8)
    elif f is not None:
        setattr(m, f, val(f))
    if rnd.random() < 0.2:
        m.properties.keys.extend(["Quality"] * rnd.randrange(3))
        for _ in range(rnd.randrange(3)):
            pv = m.properties.values.add(type=rnd.randrange(40))
            pv.int_value = rnd.choice([0, 192, 500])


def test_random_sessions_never_fail_the_decoder() -> None:
    dec = Decoder(IngestSettings(database_url="postgresql://x", mqtt_url="mqtt://x"))
    for it in range(400):
        now = int(time.time() * 1000)
        batch = []
        for k in range(4):
            pb = PayloadPb()
            if rnd.random() < 0.9:
                pb.timestamp = now
            if rnd.random() < 0.95:
                pb.seq = k if rnd.random() < 0.9 else rnd.randrange(300)
            for _ in range(rnd.randrange(6)):
                metric(pb, now, k == 0)
            kind = ["NBIRTH", "NDATA", "DBIRTH", "DDATA"][k]
            if rnd.random() < 0.1:
                kind = rnd.choice(["NDEATH", "DDEATH"])
            topic = f"spBv1.0/G {it % 3}/{kind}/N{it % 5}" + ("/D 1" if kind[0] == "D" else "")
            batch.append(Raw(topic, pb.SerializeToString(), Ack(k, 1, 1), time.time()))
        out = dec.decode(batch)
        assert [d.reason for d in out.dead if d.kind == "internal"] == []
        for a in out.accepted:
            assert all(text is None or "\x00" not in text for *_, text in a.extra)
            assert all(e[2] is None or "\x00" not in e[2] for e in a.events)
    assert set(dec.sparkplug.skipped) <= set(SKIP_REASONS)
    assert sum(dec.sparkplug.skipped.values()) > 1000  # the run did meet unusual metrics

"""Decode speed of the v1 JSON codec on a realistic telemetry batch.

Run: ``.venv/bin/python -m bench.protocol [--samples 10] [--signals 12] [--seconds 2]``
(``python bench/protocol.py`` works too).
Prints messages/s and values/s for decode_telemetry (orjson + validation against the catalogue),
for orjson alone (the floor), and for encode.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path and its name shadows the
# ``protocol`` package; put the repository root there instead.
if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import orjson

from protocol import (
    CATALOGUE,
    Sample,
    SignalChannel,
    Telemetry,
    decode_telemetry,
    encode,
)


def make_batch(samples: int, signals: int, seed: int = 1) -> Telemetry:
    """A telemetry batch of ``samples`` x ``signals`` float values, 100 ms apart."""
    rng = random.Random(seed)
    names = [s.name for s in CATALOGUE.values() if s.channel is SignalChannel.TELEMETRY][:signals]
    t0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    return Telemetry(
        session="01HZX3K5Q8",
        seq=42,
        samples=[
            Sample(
                ts=t0 + timedelta(milliseconds=100 * i),
                values={n: round(rng.uniform(0, 12000), 3) for n in names},
            )
            for i in range(samples)
        ],
    )


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``."""
    n = 0
    batch = 50
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--signals", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    batch = make_batch(args.samples, args.signals)
    payload = encode(batch)
    values = args.samples * args.signals
    assert decode_telemetry(payload) == batch
    print(f"telemetry batch: {args.samples} samples x {args.signals} signals, {len(payload)} bytes")
    for label, fn in (
        ("orjson.loads only", lambda: orjson.loads(payload)),
        ("decode_telemetry", lambda: decode_telemetry(payload)),
        ("encode", lambda: encode(batch)),
    ):
        per_s = rate(fn, args.seconds)
        print(f"{label:>18}: {per_s:10,.0f} messages/s {per_s * values:12,.0f} values/s")


if __name__ == "__main__":
    main()

"""The simulation loop: step the fleet, feed the truth and the controllers, keep the pace.

``speedup`` is simulated seconds per wall-clock second: 1 is real time, 60 runs an hour in a
minute, 0 (or ``inf``) runs as fast as the CPU and the transport allow. Source timestamps are
always simulated time. Between ticks the loop gives the transport its I/O time (``service``), so
one thread drives the model and every connection.
"""

from __future__ import annotations

__all__ = ["RunResult", "Service", "run_loop"]

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from simulators.controllers import I5Controllers
from simulators.model import Fleet
from simulators.truth import Truth

logger = logging.getLogger(__name__)


class Service(Protocol):
    """A transport that needs the loop's time: ``service(timeout)`` does pending I/O, waiting at
    most ``timeout`` seconds for some."""

    def service(self, timeout: float) -> None: ...


@dataclass(frozen=True, slots=True)
class RunResult:
    """Ticks stepped, simulated seconds, wall seconds and CPU seconds of a run."""

    ticks: int
    sim_s: float
    wall_s: float
    cpu_s: float


def run_loop(
    fleet: Fleet,
    controllers: I5Controllers | None,
    truth: Truth | None,
    *,
    duration_s: float,
    speedup: float = 1.0,
    transport: Service | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint: Callable[[], None] | None = None,
    checkpoint_every_s: float = 0.0,
) -> RunResult:
    """Run ``duration_s`` simulated seconds (``inf`` until ``should_stop`` says so).

    ``on_checkpoint`` is called every ``checkpoint_every_s`` simulated seconds (e.g. to write the
    truth summary on request); ``should_stop`` is checked every tick. At the end the controllers
    flush their samples and publish their offline status (reason ``shutdown``).
    """
    dt = fleet.dt
    n_ticks = math.inf if math.isinf(duration_s) else max(0, round(duration_s / dt))
    paced = speedup > 0 and not math.isinf(speedup)
    wall0 = time.monotonic()
    cpu0 = time.process_time()
    next_check = checkpoint_every_s if checkpoint_every_s > 0 else math.inf
    k = 0
    while k < n_ticks:
        if should_stop is not None and should_stop():
            break
        if paced:
            target = wall0 + k * dt / speedup
            while True:
                now = time.monotonic()
                if now >= target:
                    break
                if transport is not None:
                    transport.service(target - now)
                else:
                    time.sleep(target - now)
        elif transport is not None:
            transport.service(0.0)
        rep = fleet.step()
        if truth is not None:
            truth.observe(fleet, rep)
        if controllers is not None:
            controllers.on_step(rep)
        k += 1
        if k * dt >= next_check and on_checkpoint is not None:
            on_checkpoint()
            next_check += checkpoint_every_s
    if controllers is not None:
        controllers.shutdown(fleet.time)
    if transport is not None:
        transport.service(0.0)
    return RunResult(k, k * dt, time.monotonic() - wall0, time.process_time() - cpu0)

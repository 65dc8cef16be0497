"""``arbor sim`` / ``python -m simulators``: run a simulated i5 factory.

Examples::

    arbor sim --machines 50 --rate 10 --duration 28800 --speedup 0 --seed 7 --summary truth.json
    arbor sim --factory plant.toml --speedup 60 --connection shared
    arbor sim --transport shdr --machines 1 --shdr-port 7878 --devices-xml Devices.xml
    arbor sim --transport shdr --replay capture.shdr --speedup 10

Flags override ``ARBOR_SIM_*`` environment settings; the broker is ``ARBOR_MQTT_URL``. Per-machine
broker credentials come from ``provision`` (the lead's ``arbor.broker.ensure_machines``) or from
``--credentials FILE``; machines without any use the service account. SIGINT/SIGTERM end the run
cleanly (summary written); SIGUSR1 writes the summary without stopping.
"""

from __future__ import annotations

__all__ = ["Provision", "main", "run"]

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from protocol.endpoint import parse_mqtt_url
from simulators.config import SimSettings
from simulators.controllers import I5Controllers, NullSink, Sink
from simulators.errors import SimulatorError
from simulators.factory import Factory, default_factory, load_factory
from simulators.model import Fleet
from simulators.runner import run_loop
from simulators.truth import Truth

logger = logging.getLogger(__name__)
#: At the end of an SHDR run, how long readers may take to read what was served (see ShdrServer).
_END_LINGER_S = 60.0

#: (site, machine) pairs -> {(site, machine): (username, password)}, creating missing accounts.
Provision = Callable[[list[tuple[str, str]]], dict[tuple[str, str], tuple[str, str]]]

_FLAGS: dict[str, str] = {
    "machines": "machines",
    "factory": "factory",
    "site": "site",
    "rate": "rate_hz",
    "batch": "batch_s",
    "duration": "duration_s",
    "speedup": "speedup",
    "seed": "seed",
    "start": "start",
    "summary": "summary",
    "summary_every": "summary_every_s",
    "transport": "transport",
    "connection": "connection",
    "credentials": "credentials_file",
    "max_inflight": "max_inflight",
    "max_pending": "max_pending",
    "buffer_max": "buffer_max",
    "reconnect_max": "reconnect_max_s",
    "run_id": "run_id",
    "mqtt_url": "mqtt_url",
    "shdr_host": "shdr_host",
    "shdr_port": "shdr_port",
    "replay": "replay",
    "record": "record",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arbor sim", description="Run a simulated i5 factory.")
    a = p.add_argument
    a("--machines", type=int, help="machines of the default factory (default 20)")
    a("--factory", type=Path, help="factory TOML (kinds, counts, calendar)")
    a("--site", help="site id of the default factory (default sim)")
    a("--rate", type=float, metavar="HZ", help="samples per second per machine (default 10)")
    a("--batch", type=float, metavar="S", help="seconds of samples per telemetry message (1)")
    a("--duration", type=float, metavar="S", help="simulated seconds (default: until stopped)")
    a("--speedup", type=float, metavar="X", help="simulated s per wall s; 0 = max (default 1)")
    a("--seed", type=int, metavar="K")
    a("--start", metavar="ISO", help="simulated start, UTC (default 2025-03-03T05:45:00Z)")
    a("--summary", type=Path, metavar="FILE", help="ground-truth JSON written at exit")
    a("--summary-every", type=float, metavar="S", help="also write it every S simulated s")
    a("--transport", choices=["mqtt", "shdr", "none"])
    a("--connection", choices=["per_machine", "shared"])
    a("--credentials", type=Path, metavar="FILE", help='{"site/machine": {username, password}}')
    a("--max-inflight", type=int)
    a("--max-pending", type=int)
    a("--buffer-max", type=int, metavar="N", help="messages kept per machine while offline (1000)")
    a("--reconnect-max", type=float, metavar="S", help="longest reconnect backoff (5 s)")
    a("--run-id", help="session id prefix (default random)")
    a("--mqtt-url", help="broker URL (default ARBOR_MQTT_URL)")
    a("--shdr-host")
    a("--shdr-port", type=int)
    a("--devices-xml", type=Path, metavar="FILE", help="write the SHDR Devices.xml here")
    a("--replay", type=Path, metavar="FILE", help="replay an SHDR capture (transport shdr)")
    a("--record", type=Path, metavar="FILE", help="record the served SHDR lines")
    a("-v", "--verbose", action="store_true")
    return p


def settings_from_args(argv: list[str]) -> tuple[SimSettings, argparse.Namespace]:
    """Parse ``argv`` over the environment into one :class:`SimSettings`."""
    args = _parser().parse_args(argv)
    given: dict[str, Any] = {}
    for flag, field in _FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            given[field] = value
    return SimSettings(**given), args


def _factory(s: SimSettings) -> Factory:
    if s.factory is not None:
        return load_factory(s.factory)
    return default_factory(s.machines, site=s.site)


def _credentials(
    s: SimSettings, factory: Factory, provision: Provision | None
) -> dict[int, tuple[str, str]]:
    pairs = [(factory.site, m.machine_id) for m in factory.machines]
    index = {pair: i for i, pair in enumerate(pairs)}
    if provision is not None:
        got = provision(pairs)
        return {index[k]: v for k, v in got.items() if k in index}
    if s.credentials_file is not None:
        try:
            data = json.loads(s.credentials_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SimulatorError(f"cannot read credentials {s.credentials_file}: {exc}") from exc
        out = {}
        for key, cred in data.items():
            site, _, machine = key.partition("/")
            if (site, machine) in index:
                out[index[(site, machine)]] = (cred["username"], cred["password"])
        return out
    return {}


class _Signals:
    """SIGINT/SIGTERM request a stop, SIGUSR1 a summary; restored on exit."""

    def __init__(self) -> None:
        self.stop = False
        self.dump = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        def on_stop(signum: int, frame: object) -> None:
            self.stop = True

        def on_dump(signum: int, frame: object) -> None:
            self.dump = True

        for sig, fn in ((signal.SIGINT, on_stop), (signal.SIGTERM, on_stop),
                        (signal.SIGUSR1, on_dump)):  # fmt: skip
            # Outside the main thread (tests) there is no signal handling: ValueError.
            with contextlib.suppress(ValueError):
                self._old[sig] = signal.signal(sig, fn)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _run_info(s: SimSettings, extra: dict[str, Any]) -> dict[str, Any]:
    return {"seed": s.seed, "transport": s.transport, "connection": s.connection, **extra}


def run_mqtt_or_none(s: SimSettings, provision: Provision | None = None) -> int:
    """The MQTT (or model-only) factory run; returns an exit code."""
    factory = _factory(s)
    fleet = Fleet(factory, rate_hz=s.rate_hz, start=s.start.timestamp(), seed=s.seed)
    truth = Truth(fleet)
    transport = None
    sink: Sink
    if s.transport == "mqtt":
        from simulators.mqtt_publisher import MqttTransport

        try:
            ep = parse_mqtt_url(s.mqtt_url)
        except ValueError as exc:  # the message names the problem and never the password
            raise SimulatorError(str(exc)) from None
        creds = {} if s.connection == "shared" else _credentials(s, factory, provision)
        tls = ssl.create_default_context(cafile=ep.ca_certs) if ep.tls else None
        transport = MqttTransport(
            ep.host, ep.port, site=factory.site,
            machine_ids=[m.machine_id for m in factory.machines], username=ep.username,
            password=ep.password, credentials=creds, shared=s.connection == "shared",
            max_inflight=s.max_inflight, max_pending=s.max_pending, buffer_max=s.buffer_max,
            reconnect_max=s.reconnect_max_s, tls=tls,
        )  # fmt: skip
        sink = transport
    else:
        sink = NullSink()
    controllers = I5Controllers(fleet, sink, truth=truth, run_id=s.run_id, batch_s=s.batch_s)
    if transport is not None:  # cmd/program and cmd/rebirth, answered on reply/*
        from simulators.downlink import I5Downlink

        transport.on_command = I5Downlink(controllers, transport).handle

    def info() -> dict[str, Any]:
        extra: dict[str, Any] = {"run_id": controllers.run_id}
        if transport is not None:
            st = transport.stats
            extra["transport_stats"] = {
                "published": st.published, "acked": st.acked, "dropped": st.dropped,
                "refused": st.refused, "resent": st.resent, "connects": st.connects,
                "reconnects": st.reconnects, "disconnects": st.disconnects,
            }  # fmt: skip
        return _run_info(s, extra)

    def checkpoint() -> None:
        if s.summary is not None:
            truth.write(s.summary, **info())

    with _Signals() as sig:

        def should_stop() -> bool:
            if sig.dump:
                sig.dump = False
                checkpoint()
            return sig.stop

        logger.info("simulating %d machines of site %s at %g Hz, speedup %g (%s)",
                    fleet.n, factory.site, s.rate_hz, s.speedup, s.transport)  # fmt: skip
        try:
            result = run_loop(fleet, controllers, truth, duration_s=s.duration_s,
                              speedup=s.speedup, transport=transport, should_stop=should_stop,
                              on_checkpoint=checkpoint,
                              checkpoint_every_s=s.summary_every_s)  # fmt: skip
        finally:
            if transport is not None:
                transport.stop()
            checkpoint()
    logger.info("done: %d ticks, %.0f simulated s in %.1f wall s (%.1f CPU s)",
                result.ticks, result.sim_s, result.wall_s, result.cpu_s)  # fmt: skip
    return 0


async def _shdr(s: SimSettings, devices_xml_path: Path | None) -> int:
    from simulators.shdr_adapter import (
        ShdrLines,
        ShdrServer,
        devices_xml,
        replay_capture,
        run_fleet_adapter,
    )

    record = s.record.open("w", encoding="utf-8") if s.record else None
    try:
        if s.replay is not None:
            async with ShdrServer(
                s.shdr_host, s.shdr_port, record=record, linger_s=_END_LINGER_S
            ) as server:
                logger.info("replaying %s on %s:%d", s.replay, s.shdr_host, server.port)
                await replay_capture(s.replay, server, speedup=s.speedup)
            return 0
        factory = _factory(s)
        fleet = Fleet(factory, rate_hz=s.rate_hz, start=s.start.timestamp(), seed=s.seed)
        truth = Truth(fleet)
        machines = list(range(fleet.n))
        if devices_xml_path is not None:
            await asyncio.to_thread(
                devices_xml_path.write_text, devices_xml(fleet, machines), encoding="utf-8"
            )
        lines = ShdrLines(fleet, machines)
        async with ShdrServer(
            s.shdr_host,
            s.shdr_port,
            snapshot=lines.snapshot,
            record=record,
            linger_s=_END_LINGER_S,
        ) as server:
            logger.info("SHDR adapter for %d machine(s) on %s:%d", fleet.n, s.shdr_host,
                        server.port)  # fmt: skip
            await run_fleet_adapter(fleet, machines, server, duration_s=s.duration_s,
                                    speedup=s.speedup, truth=truth, lines=lines)  # fmt: skip
        if s.summary is not None:
            truth.write(s.summary, **_run_info(s, {}))
        return 0
    finally:
        if record is not None:
            record.close()


def run(argv: list[str], provision: Provision | None = None) -> int:
    """Entry point of ``arbor sim``: parse ``argv``, run, return the exit code."""
    try:
        s, args = settings_from_args(argv)
    except ValidationError as exc:
        print(f"arbor sim: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        if s.transport == "shdr":
            return asyncio.run(_shdr(s, args.devices_xml))
        return run_mqtt_or_none(s, provision)
    except SimulatorError as exc:
        print(f"arbor sim: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def main() -> None:
    """``python -m simulators``."""
    sys.exit(run(sys.argv[1:]))

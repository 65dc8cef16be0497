"""``arbor gateway`` / ``python -m gateway``: run the edge gateway.

    arbor gateway --config gateway.toml [--check]
    arbor gateway --shdr HOST:PORT --devices Devices.xml [--device NAME] --site S --machine M
                  [--program-dir DIR] [--buffer FILE] [--mqtt-url URL]

The broker comes from the file's ``[mqtt] url``, ``--mqtt-url`` or ARBOR_MQTT_URL. Every
configuration problem is reported at once, before anything starts (exit status 2).
"""

from __future__ import annotations

__all__ = ["main", "run"]

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.app import Gateway
from gateway.config import (
    GatewayConfig,
    GatewaySettings,
    load_config,
    resolve,
    single_source_config,
)
from gateway.errors import ConfigError, GatewayError

log = logging.getLogger("gateway")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="arbor gateway", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    p.add_argument("--shdr", metavar="HOST:PORT", help="a single SHDR adapter")
    p.add_argument("--devices", type=Path, help="its Devices.xml")
    p.add_argument("--device", help="device name in Devices.xml (if it has several)")
    p.add_argument("--site", help="site id")
    p.add_argument("--machine", help="machine id")
    p.add_argument("--program-dir", type=Path, help="where downloaded NC programs go")
    p.add_argument("--buffer", type=Path, help="disk buffer file (default ARBOR_GATEWAY_BUFFER)")
    p.add_argument("--mqtt-url", help="mqtt://user:pass@host:port (default ARBOR_MQTT_URL)")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default INFO)")
    return p


def _config(args: argparse.Namespace) -> GatewayConfig:
    if args.config is not None:
        if args.shdr:
            raise ConfigError(["--config and --shdr are exclusive"])
        return load_config(args.config)
    missing = [
        f"--{name}" for name in ("shdr", "devices", "site", "machine") if not getattr(args, name)
    ]
    if missing:
        raise ConfigError([f"give --config FILE, or {' '.join(missing)} for a single source"])
    return single_source_config(
        shdr=args.shdr,
        devices=args.devices,
        device=args.device,
        site=args.site,
        machine=args.machine,
        program_dir=args.program_dir,
        buffer=args.buffer,
    )


async def _serve(gateway: Gateway) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, gateway.stop)
    await gateway.run()


def run(argv: Sequence[str]) -> int:
    """Entry point of ``arbor gateway`` (argv without the subcommand); the exit status."""
    args = _parser().parse_args(list(argv))
    settings = GatewaySettings()
    if args.mqtt_url:
        settings = settings.model_copy(update={"mqtt_url": args.mqtt_url})
    logging.basicConfig(
        level=(args.log_level or settings.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = _config(args)
        if args.buffer is not None:
            config = config.model_copy(
                update={"buffer": config.buffer.model_copy(update={"path": args.buffer})}
            )
        sources = resolve(config, settings)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        for s in sources:
            print(
                f"{s.config.site}/{s.config.machine}: shdr {s.config.address} device "
                f"{s.device.name} ({len(s.device.items)} data items)"
            )
        return 0
    try:
        asyncio.run(_serve(Gateway(config, sources, settings)))
    except GatewayError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def main() -> None:
    """``python -m gateway``."""
    sys.exit(run(sys.argv[1:]))

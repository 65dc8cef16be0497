"""Where the local stack keeps its state: `.arbor/` in the checkout, or ARBOR_STATE_DIR."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["env_file", "load_env_file", "project_root", "state_dir"]


def project_root() -> Path:
    """The checkout this package was installed from (editable install)."""
    return Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    """The directory holding the local servers' data, logs, configs and secrets."""
    configured = os.environ.get("ARBOR_STATE_DIR")
    return Path(configured).resolve() if configured else project_root() / ".arbor"


def env_file() -> Path:
    """The file `arbor up` writes the local endpoints and service credentials to."""
    return state_dir() / "arbor.env"


def load_env_file(path: Path | None = None) -> dict[str, str]:
    """Put the local stack's ARBOR_* settings into os.environ, never overriding what is already set.

    Services read only their environment; the `arbor` command and the tests call this first so that
    a user's own ARBOR_DATABASE_URL or ARBOR_MQTT_URL always wins over the local stack's.
    Returns the values read from the file.
    """
    path = path or env_file()
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    for key, value in values.items():
        os.environ.setdefault(key, value)
    return values

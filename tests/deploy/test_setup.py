"""The set-up both quick-start commands begin with: idempotent, and honest about what it did."""

from __future__ import annotations

import subprocess
import time

import pytest

from arbor.paths import project_root
from arbor.stack import mosquitto_binary


@pytest.mark.slow
def test_second_setup_changes_nothing_and_is_quick() -> None:
    # make test has just run it; running it again must find everything in place.
    started = time.monotonic()
    res = subprocess.run(
        ["bash", str(project_root() / "deploy" / "setup.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert res.returncode == 0, res.stderr
    assert "TimescaleDB already installed (2.19.3)" in res.stdout
    assert "Mosquitto 2.0.21 already built (/usr/local/sbin/mosquitto)" in res.stdout
    # no package, uv, TimescaleDB or Mosquitto install (nor a source index read) on a warm run
    assert "installing" not in res.stdout and "building" not in res.stdout
    assert "source index" not in res.stdout
    assert "ready: Python 3.11" in res.stdout
    assert elapsed < 30, f"a warm set-up took {elapsed:.1f} s"


def test_ci_runs_make_test_and_nothing_else() -> None:
    lines = [
        line.strip()
        for line in (project_root() / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[-1] == "exec make test"
    assert all(not line.startswith(("pip", "apt", "make ")) for line in lines[:-1])


def test_the_broker_arbor_up_starts_has_upstreams_fix_for_crashes_on_subscribe() -> None:
    # Debian 12's mosquitto 2.0.11 segfaulted under ingest's load; setup.sh builds Debian 13's
    # 2.0.21 into /usr/local/sbin, which `arbor up` starts whatever PATH says.
    found = mosquitto_binary()
    assert found == "/usr/local/sbin/mosquitto"
    res = subprocess.run([found, "-h"], capture_output=True, text=True, check=False)
    version = res.stdout.splitlines()[0].split()[-1]
    assert tuple(int(x) for x in version.split(".")) >= (2, 0, 18), version


def test_setup_installs_what_arbor_up_needs_for_tls() -> None:
    # `arbor up` makes the local CA and the broker's certificate with the openssl command.
    text = (project_root() / "deploy" / "setup.sh").read_text()
    packages = text.split("packages=(", 1)[1].split(")", 1)[0].split()
    assert "openssl" in packages and "mosquitto" in packages

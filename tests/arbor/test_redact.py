"""arbor.redact: what an `arbor` process writes never carries a URL's password; the TLS port
follows the plain one, so private stacks on other ports never collide with the shared 18883."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from arbor.config import StackSettings
from arbor.redact import RedactingStream


def test_stream_redacts_each_write_and_passes_the_rest_through() -> None:
    raw = io.StringIO()
    out = RedactingStream(raw)
    line = "db postgresql://arbor:pw-1@127.0.0.1:5/a\n"
    assert out.write(line) == len(line)  # what the caller wrote, as a stream must say
    out.writelines(["mqtts://svc:Zz_9@h:1 ", "arbor_abc_def\n"])
    assert raw.getvalue() == (
        "db postgresql://arbor:***@127.0.0.1:5/a\nmqtts://svc:***@h:1 arbor_abc_def\n"
    )
    assert out.getvalue() == raw.getvalue()  # everything else is the wrapped stream's


def test_an_arbor_process_does_not_print_a_password_it_was_given(tmp_path: Path) -> None:
    # pydantic quotes the invalid value it was given; the filter must catch it on stderr.
    res = subprocess.run(
        [sys.executable, "-m", "arbor.cli", "alerts"],
        env={"ARBOR_STATE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
             "ARBOR_DATABASE_URL": "mysql://arbor:Sup3rSecret@127.0.0.1/x",
             "ARBOR_MQTT_URL": "mqtt://svc:Sup3rSecret@127.0.0.1:1"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode != 0
    assert "mysql://arbor:***@127.0.0.1/x" in res.stdout + res.stderr
    assert "Sup3rSecret" not in res.stdout + res.stderr


@pytest.mark.parametrize(
    ("plain", "tls", "expected"),
    [(18830, None, 18883), (28830, None, 0), (28830, 28883, 28883), (18830, 0, 0)],
)
def test_tls_port_follows_the_plain_port(
    plain: int, tls: int | None, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ARBOR_MQTT_TLS_PORT", raising=False)
    assert StackSettings(mqtt_port=plain, mqtt_tls_port=tls).tls_port == expected

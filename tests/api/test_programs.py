"""NC programs through the real stack: upload, versions, checksums, a push over MQTT to a fake
machine that reassembles the chunks and answers, failures, the audit trail."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from api.config import ApiSettings
from api.keys import Role
from protocol import (
    ProgramArgs,
    Reply,
    ReplyError,
    assemble_program,
    cmd_filter,
    decode_command,
    encode,
    parse_topic,
    reply_topic,
)
from tests.api.conftest import add_machines, error_of, serve

pytestmark = pytest.mark.services


class FakeMachine:
    """Answers cmd/program like a controller: every chunk acknowledged, the digest checked at the
    end; `refuse` makes it answer the last chunk with checksum_mismatch instead."""

    def __init__(self, mqtt_settings: Any, site: str, machine: str, *, refuse: bool = False):
        self.site, self.machine, self.refuse = site, machine, refuse
        self.received: dict[str, bytes] = {}
        self._chunks: list[ProgramArgs] = []
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.username_pw_set(mqtt_settings.username, mqtt_settings.password)
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.connect(mqtt_settings.host, mqtt_settings.port)
        self._client.subscribe(cmd_filter(site, machine, "program"), qos=1)
        self._client.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        command = decode_command(bytes(msg.payload), parse_topic(msg.topic).command)
        args = command.args
        assert isinstance(args, ProgramArgs)
        self._chunks.append(args)
        result: dict[str, Any] = {"received": args.chunk_index}
        reply = Reply(id=command.id, ts=command.ts, ok=True, result=result)
        if len({c.chunk_index for c in self._chunks}) == args.chunk_count:
            if self.refuse:
                error = ReplyError(code="checksum_mismatch", message="digest differs")
                reply = Reply(id=command.id, ts=command.ts, ok=False, error=error)
            else:
                self.received[f"{args.name}/{args.version}"] = assemble_program(self._chunks)
                reply = Reply(
                    id=command.id, ts=command.ts, ok=True, result=result | {"complete": True}
                )
            self._chunks = []
        client.publish(reply_topic(self.site, self.machine, "program"), encode(reply), qos=1)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture(scope="module")
def site(api_database: str, unique_site: str) -> str:
    add_machines(api_database, [(unique_site, "m01"), (unique_site, "m02")])
    return unique_site


@pytest.fixture(scope="module")
def machines(mqtt_settings: Any, site: str) -> Iterator[tuple[FakeMachine, FakeMachine]]:
    good = FakeMachine(mqtt_settings, site, "m01")
    bad = FakeMachine(mqtt_settings, site, "m02", refuse=True)
    yield good, bad
    good.close()
    bad.close()


@pytest.fixture(scope="module")
def engineer(
    keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> httpx.Client:
    return client_for(keys[Role.ENGINEER])


@pytest.fixture(scope="module")
def operator(
    keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> httpx.Client:
    return client_for(keys[Role.OPERATOR])


PROGRAM = (
    "%\nO1234\n"
    + "".join(f"N{i} G1 X{i % 400}.0 Y{i % 97}.5 F1200\n" for i in range(9000))
    + "M30\n%\n"
)


def test_upload_versions_and_content(engineer: httpx.Client) -> None:
    first = engineer.post("/api/v1/programs", json={"name": "O1234", "content": "G0 X0\nM30\n"})
    assert first.status_code == 201, first.text
    assert first.json()["version"] == "1"
    assert first.json()["sha256"] == hashlib.sha256(b"G0 X0\nM30\n").hexdigest()
    assert first.json()["created_by"].startswith("test engineer")
    second = engineer.post(
        "/api/v1/programs", json={"name": "O1234", "content": PROGRAM, "comment": "roughing"}
    )
    assert second.json()["version"] == "2" and second.json()["size"] == len(PROGRAM)
    duplicate = engineer.post(
        "/api/v1/programs", json={"name": "O1234", "version": "2", "content": "x"}
    )
    assert duplicate.status_code == 409
    assert error_of(duplicate) | {"message": ""} == {
        "code": "program_version_exists",
        "message": "",
        "field": "version",
    }
    binary = bytes(range(256))
    b64 = engineer.post(
        "/api/v1/programs",
        json={
            "name": "bin.nc",
            "version": "a1",
            "content": base64.b64encode(binary).decode(),
            "encoding": "base64",
        },
    )
    assert b64.status_code == 201
    content = engineer.get("/api/v1/programs/bin.nc/versions/a1/content")
    assert content.content == binary
    assert content.headers["x-checksum-sha256"] == hashlib.sha256(binary).hexdigest()
    versions = engineer.get("/api/v1/programs/O1234").json()
    assert [v["version"] for v in versions] == ["2", "1"]
    names = {p["name"]: p for p in engineer.get("/api/v1/programs").json()}
    assert names["O1234"]["versions"] == 2 and names["O1234"]["latest_version"] == "2"
    meta = engineer.get("/api/v1/programs/O1234/versions/2").json()
    assert meta["comment"] == "roughing"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "bad name", "content": "x"}, "name"),
        ({"name": "O1", "content": "!!", "encoding": "base64"}, "content"),
        ({"name": "O1", "version": "-1", "content": "x"}, "version"),
        ({"name": "O1"}, "content"),
        ({"name": "O1", "content": "x", "encoding": "latin-1"}, "encoding"),
    ],
)
def test_bad_uploads_name_the_field(
    engineer: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = engineer.post("/api/v1/programs", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field


def test_missing_programs(engineer: httpx.Client) -> None:
    assert error_of(engineer.get("/api/v1/programs/O404"))["code"] == "program_not_found"
    missing = engineer.get("/api/v1/programs/O1234/versions/99")
    assert missing.status_code == 404 and error_of(missing)["code"] == "program_not_found"


def _wait_for(client: httpx.Client, push_id: int, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        push = client.get(f"/api/v1/program-pushes/{push_id}").json()
        if push["state"] == state or time.monotonic() > deadline:
            return dict(push)
        time.sleep(0.05)


def test_push_reaches_the_machine_and_completes(
    site: str, operator: httpx.Client, machines: tuple[FakeMachine, FakeMachine]
) -> None:
    response = operator.post(
        f"/api/v1/machines/{site}:m01/programs/push", json={"name": "O1234", "version": "2"}
    )
    assert response.status_code == 202, response.text
    push = response.json()
    assert push["chunk_count"] == 3 and push["requested_by"].startswith("test operator")
    done = _wait_for(operator, push["id"], "complete")
    assert done["state"] == "complete", done
    assert done["chunks_acknowledged"] == 3 and done["finished_at"] is not None
    assert all(c["ok"] for c in done["chunks"])
    assert done["chunks"][-1]["result"] == {"received": 2, "complete": True}
    assert machines[0].received["O1234/2"] == PROGRAM.encode()
    listed = operator.get(f"/api/v1/machines/{site}:m01/programs/pushes").json()
    assert listed[0]["id"] == push["id"]


def test_push_refused_by_the_machine_fails_with_its_code(
    site: str, operator: httpx.Client, machines: tuple[FakeMachine, FakeMachine]
) -> None:
    response = operator.post(
        f"/api/v1/machines/{site}:m02/programs/push", json={"name": "O1234", "version": "1"}
    )
    assert response.status_code == 202
    done = _wait_for(operator, response.json()["id"], "failed")
    assert done["state"] == "failed"
    assert (done["error_code"], done["error_message"]) == ("checksum_mismatch", "digest differs")


def test_push_bad_inputs(site: str, operator: httpx.Client) -> None:
    url = f"/api/v1/machines/{site}:m01/programs/push"
    assert error_of(operator.post(url, json={"name": "O1234", "version": "77"}))["code"] == (
        "program_not_found"
    )
    assert error_of(operator.post(url, json={"name": "O1234"}))["field"] == "version"
    nosuch = operator.post(
        "/api/v1/machines/nosuch/programs/push", json={"name": "O1234", "version": "1"}
    )
    assert error_of(nosuch)["code"] == "machine_not_found"
    assert error_of(operator.get("/api/v1/program-pushes/999999"))["code"] == "push_not_found"


def test_push_without_a_broker_is_unavailable(
    site: str, api_settings: ApiSettings, keys: dict[Role, str]
) -> None:
    with serve(api_settings.model_copy(update={"mqtt_url": ""})) as url:
        headers = {"Authorization": f"Bearer {keys[Role.OPERATOR]}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            response = client.post(
                f"/api/v1/machines/{site}:m01/programs/push", json={"name": "O1234", "version": "1"}
            )
            assert response.status_code == 503
            assert error_of(response)["code"] == "broker_unavailable"
            health = client.get("/healthz").json()
            assert health["broker"]["detail"].startswith("not configured")


def test_audit_and_metrics(
    site: str, keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    admin = client_for(keys[Role.ADMIN])
    actions = [e["action"] for e in admin.get("/api/v1/audit", params={"limit": 1000}).json()]
    assert actions.count("program.upload") == 3
    pushes = admin.get("/api/v1/audit", params={"site": site, "action": "program.push"}).json()
    assert {e["machine"] for e in pushes} == {"m01", "m02"}
    metrics = client_for(None).get("/metrics").text
    # 3 chunks of version 2 to m01, 1 chunk of version 1 to m02; each answered.
    assert "arbor_api_program_chunks_sent_total 4.0" in metrics
    assert 'arbor_api_replies_total{outcome="stored"} 4.0' in metrics

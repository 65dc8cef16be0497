"""The alerts routes against a live API and database: rules CRUD, the lifecycle by hand,
subscriptions (secrets never returned), the delivery log, site scope and roles."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import psycopg
import pytest

from api.keys import Role
from tests.api.conftest import add_machines, error_of, make_key

pytestmark = pytest.mark.services

OVERLOAD = {
    "name": "spindle overload",
    "kind": "threshold",
    "params": {"signal": "spindle_load", "op": ">", "value": 120, "for_s": 2},
    "severity": "critical",
    "site": "p1",
    "escalate_after_s": 600,
}


def _open_alert(url: str, rule_id: int, site: str, machine: str) -> int:
    """An alert as the alerts worker opens it."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """INSERT INTO alert (rule_id, site, machine, severity, title, trigger_ts, value)
               VALUES (%s, %s, %s, 'critical', 'spindle overload', now(), 150) RETURNING id""",
            [rule_id, site, machine],
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_rules_crud_and_validation(
    keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    eng = client_for(keys[Role.ENGINEER])
    created = eng.post("/api/v1/alert-rules", json=OVERLOAD)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert rule["params"] == {"signal": "spindle_load", "op": ">", "value": 120.0, "for_s": 2.0}
    assert rule["created_by"].startswith("test engineer")
    assert any(r["id"] == rule["id"] for r in eng.get("/api/v1/alert-rules").json())
    bad = eng.post("/api/v1/alert-rules", json=OVERLOAD | {"params": {"signal": "spindle_load"}})
    assert bad.status_code == 422
    assert error_of(bad)["code"] == "validation_error"
    repeat = eng.post("/api/v1/alert-rules", json=OVERLOAD | {"repeat_count": 3})
    assert repeat.status_code == 422 and "repeat_window_s" in error_of(repeat)["message"]
    viewer = client_for(keys[Role.VIEWER])
    assert viewer.post("/api/v1/alert-rules", json=OVERLOAD).status_code == 403
    replaced = eng.put(f"/api/v1/alert-rules/{rule['id']}", json=OVERLOAD | {"enabled": False})
    assert replaced.status_code == 200 and replaced.json()["enabled"] is False
    assert eng.delete(f"/api/v1/alert-rules/{rule['id']}").status_code == 204
    missing = eng.get(f"/api/v1/alert-rules/{rule['id']}")
    assert missing.status_code == 404 and error_of(missing)["code"] == "rule_not_found"


def test_lifecycle_by_hand_with_history_and_deliveries(
    api_database: str, keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    add_machines(api_database, [("p1", "m1"), ("p2", "m9")])
    eng = client_for(keys[Role.ENGINEER])
    sub = eng.post(
        "/api/v1/alert-subscriptions",
        json={"name": "maint hook", "team": "maintenance", "channel": "webhook",
              "target": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef0123"},
    )  # fmt: skip
    assert sub.status_code == 201, sub.text
    assert sub.json()["has_secret"] is True and "secret" not in sub.json()
    assert "0123456789abcdef" not in eng.get("/api/v1/alert-subscriptions").text
    rule_id = eng.post("/api/v1/alert-rules", json=OVERLOAD).json()["id"]
    alert_id = _open_alert(api_database, rule_id, "p1", "m1")

    listed = client_for(keys[Role.VIEWER]).get("/api/v1/alerts", params={"state": "active"})
    assert [a["id"] for a in listed.json()] == [alert_id]

    operator = client_for(keys[Role.OPERATOR])
    acked = operator.post(f"/api/v1/alerts/{alert_id}/ack", json={"comment": "on my way"})
    assert acked.status_code == 200, acked.text
    body = acked.json()
    assert body["state"] == "acknowledged" and body["ack_comment"] == "on my way"
    assert body["acknowledged_by"].startswith("test operator")
    again = operator.post(f"/api/v1/alerts/{alert_id}/ack", json={})
    assert again.status_code == 409 and error_of(again)["code"] == "alert_not_open"

    maint = client_for(keys[Role.MAINTENANCE])
    assert (
        maint.post(f"/api/v1/alerts/{alert_id}/assign", json={"assignee": "li.wei"}).json()[
            "assigned_to"
        ]
        == "li.wei"
    )
    assert (
        operator.post(f"/api/v1/alerts/{alert_id}/assign", json={"assignee": "x"}).status_code
        == 403
    )
    operator.post(f"/api/v1/alerts/{alert_id}/comment", json={"comment": "bearing noise"})
    resolved = maint.post(f"/api/v1/alerts/{alert_id}/resolve", json={"comment": "replaced"})
    assert resolved.json()["state"] == "resolved" and resolved.json()["resolution"] == "manual"
    assert maint.post(f"/api/v1/alerts/{alert_id}/resolve", json={}).status_code == 409
    history = eng.get(f"/api/v1/alerts/{alert_id}").json()["history"]
    assert [h["action"] for h in history] == ["acknowledged", "assigned", "commented", "resolved"]

    log = eng.get("/api/v1/alert-deliveries", params={"alert_id": alert_id}).json()
    assert sorted((d["transition"], d["channel"], d["status"]) for d in log) == [
        ("acknowledged", "mqtt", "pending"),
        ("acknowledged", "webhook", "pending"),
        ("resolved", "mqtt", "pending"),
        ("resolved", "webhook", "pending"),
    ]
    audit = eng.get("/api/v1/audit", params={"action": "alert.acknowledged"}).json()
    assert audit and audit[0]["detail"]["alert_id"] == alert_id


def test_site_scope_and_not_found(
    api_database: str, keys: dict[Role, str], client_for: Callable[[str | None], httpx.Client]
) -> None:
    eng = client_for(keys[Role.ENGINEER])
    rule_id = eng.post("/api/v1/alert-rules", json=OVERLOAD | {"site": "p2"}).json()["id"]
    alert_id = _open_alert(api_database, rule_id, "p2", "m9")
    scoped = client_for(make_key(api_database, Role.MAINTENANCE, "p1 only", sites=["p1"]))
    assert alert_id not in [a["id"] for a in scoped.get("/api/v1/alerts").json()]
    hidden = scoped.post(f"/api/v1/alerts/{alert_id}/ack", json={})
    assert hidden.status_code == 404 and error_of(hidden)["code"] == "alert_not_found"
    assert eng.get("/api/v1/alerts/999999").status_code == 404
    group = eng.put("/api/v1/alert-machine-groups/five-axis", json={"machines": ["p1:m1"]})
    assert group.status_code == 200
    assert eng.get("/api/v1/alert-machine-groups").json() == {"five-axis": ["p1:m1"]}

"""The programs page in Chromium: upload a program, push a version to a machine that answers over
the real broker (tests/api's fake controller), and see the machine's reply on the page."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from api.keys import Role
from tests.api.conftest import add_machines
from tests.api.test_programs import FakeMachine
from tests.browser.conftest import new_page, screenshot, sign_in

pytestmark = pytest.mark.services

PROGRAM = (
    b"%\nO5000\n"
    + b"".join(b"N%d G1 X%d.0 F900\n" % (i, i % 300) for i in range(4000))
    + b"M30\n%\n"
)


@pytest.fixture(scope="module")
def machines(
    mqtt_settings: Any, api_database: str, unique_site: str
) -> Iterator[tuple[str, FakeMachine, FakeMachine]]:
    add_machines(api_database, [(unique_site, "p1"), (unique_site, "p2")])
    good = FakeMachine(mqtt_settings, unique_site, "p1")
    bad = FakeMachine(mqtt_settings, unique_site, "p2", refuse=True)
    yield unique_site, good, bad
    good.close()
    bad.close()


def test_upload_push_and_see_the_reply(
    browser: Any,
    base_url: str,
    machines: tuple[str, FakeMachine, FakeMachine],
    keys: dict[Role, str],
    client_for: Callable[[str | None], httpx.Client],
) -> None:
    site, good, _ = machines
    page, watch = new_page(browser)
    sign_in(page, base_url, keys[Role.ENGINEER])
    page.goto(f"{base_url}/#/programs")
    page.wait_for_selector("#prog-file")
    upload: Any = [{"name": "O5000.nc", "mimeType": "text/plain", "buffer": PROGRAM}]
    page.set_input_files("#prog-file", files=upload)
    assert page.input_value("#prog-name") == "O5000"
    page.fill("#prog-comment", "browser push test")
    page.click("form.upload button[type=submit]")
    page.wait_for_selector("#prog-versions h3:text('O5000')")
    api = client_for(keys[Role.ADMIN])
    (version,) = api.get("/api/v1/programs/O5000").json()
    assert version["size"] == len(PROGRAM)
    assert version["sha256"][:12] in page.inner_text("#prog-versions")

    # Push to the machine that accepts: the page follows the push until the machine's reply.
    page.select_option("#prog-versions select", f"{site}:p1")
    page.click("#prog-versions button:text('Push v1')")
    result = page.locator("#push-result p")
    result.filter(has_text="complete").wait_for(timeout=90_000)
    (push, *_) = api.get(f"/api/v1/machines/{site}:p1/programs/pushes").json()
    assert push["state"] == "complete"
    assert f"{push['chunks_acknowledged']}/{push['chunk_count']} chunks acknowledged" in (
        result.inner_text()
    )
    assert good.received["O5000/1"] == PROGRAM
    page.wait_for_selector(f"#prog-pushes h3:text('{site}:p1')")
    assert page.locator("#prog-pushes tbody tr").first.locator("td").nth(2).inner_text() == (
        "complete"
    )
    screenshot(page, "programs-push-1920")

    # The machine that refuses: the page shows its error code.
    page.select_option("#prog-versions select", f"{site}:p2")
    page.click("#prog-versions button:text('Push v1')")
    try:
        result.filter(has_text="failed").wait_for(timeout=90_000)
    except Exception as exc:
        raise AssertionError(f"the page shows {page.inner_text('#push-result')!r}") from exc
    assert "the machine answered checksum_mismatch" in result.inner_text()
    assert watch.errors == []

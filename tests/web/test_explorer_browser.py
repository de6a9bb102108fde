"""The explorer in a real browser: headless Chromium (Debian's) driven by Playwright.

Each test walks through what a user would do on a store the test built, served by
uvicorn on a loopback port. The screenshots on docs/explorer.md
(docs/images/explorer-*.png) are the ones these tests take: they are written there only
with ``ESKIT_SCREENSHOTS=docs`` (so a test run leaves the checkout unchanged), and to the
test's temporary directory otherwise, so every run still takes them. Without chromium
these tests skip, and fail under CI=true (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from eskit import NewEvent, SQLiteEventStore
from tests.web.explorer_helpers import HOSTILE_ID, HOSTILE_TEXT, WRITE_TOKEN, explorer_app, populate
from tests.web.explorer_server import serving

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run"]
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
_SCRATCH = Path(tempfile.mkdtemp(prefix="eskit-screenshots-"))

if CHROMIUM is None and os.environ.get("CI") == "true":
    pytest.fail("chromium is not installed: apt-get install -y chromium (.ci/run does)",
                pytrace=False)
if os.environ.get("CI") == "true":
    from playwright import sync_api  # in the dev group: missing is an error, not a skip
else:
    sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store = SQLiteEventStore(str(tmp_path_factory.mktemp("explorer") / "events.db"))
    yield populate(store)
    store.close()


@pytest.fixture(scope="module")
def base_url(world):
    with serving(explorer_app(world)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(base_url=base_url, viewport={"width": 1200, "height": 760})
    page = context.new_page()
    page.set_default_timeout(10_000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs  # an injected script would open one: each test checks none did
    yield page
    context.close()
    assert dialogs == [], f"a script from the data ran: {dialogs}"


def _shot(page, name: str) -> None:
    folder = IMAGES if os.environ.get("ESKIT_SCREENSHOTS") == "docs" else _SCRATCH
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"explorer-{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 1000  # an image, not an empty file


def test_search_a_stream_open_an_event_and_follow_its_causation_link(page, world) -> None:
    page.goto("/streams")
    _shot(page, "streams")
    page.fill("input[name=prefix]", "invoice-")
    page.click("button[type=submit]")
    sync_api.expect(page.locator("#stream-count")).to_have_text("2 streams match")
    page.click("a.stream-link:text-is('invoice-1')")
    sync_api.expect(page.locator("#stream-id")).to_have_text("invoice-1")
    page.click("a.event-link")
    sync_api.expect(page.locator("#event-type")).to_have_text("InvoiceIssued")
    _shot(page, "event")
    page.click("a#causation_id")
    sync_api.expect(page.locator("#event-type")).to_have_text("OrderPlaced")
    sync_api.expect(page.locator("#event-id")).to_have_text(str(world.order_event_id))
    sync_api.expect(page.locator("#stream-link")).to_have_text("order-1")


def test_hostile_stream_ids_and_payloads_render_as_text(page) -> None:
    page.goto("/streams")
    page.click(f"a.stream-link:text-is(\"{HOSTILE_ID}\")")
    sync_api.expect(page.locator("#stream-id")).to_have_text(HOSTILE_ID)
    page.click("a.event-link")
    sync_api.expect(page.locator("#event-data")).to_contain_text(HOSTILE_TEXT)
    assert page.locator("main script, main img").count() == 0  # nothing became markup


def test_time_travel_to_an_earlier_version_and_diff_two_versions(page) -> None:
    page.goto("/stream?stream=account-003")
    page.fill("#state-form input[name=version]", "2")
    page.click("#state-form button")
    sync_api.expect(page.locator("#state-version")).to_contain_text("State at version 2 of 3")
    sync_api.expect(page.locator("#state")).to_contain_text('"balance": "13.00"')
    _shot(page, "state")
    page.click("#state-next")
    sync_api.expect(page.locator("#state")).to_contain_text('"balance": "8.00"')
    page.go_back()
    page.go_back()
    page.fill("#diff-form input[name=before]", "1")
    page.fill("#diff-form input[name=after]", "3")
    page.click("#diff-form button")
    sync_api.expect(page.locator("#diff-summary")).to_contain_text("From version 1 to version 3")
    sync_api.expect(page.locator("#diff tr.changed td").first).to_have_text("balance")
    _shot(page, "diff")


def test_retry_a_parked_event_with_the_token_after_confirming(page, world) -> None:
    page.goto("/projections")
    row = page.locator(f"tr[data-event-id='{world.poison_event_id}']")
    sync_api.expect(row).to_contain_text("the invoice printer is out of paper")
    _shot(page, "projections")
    world.projection.broken = False  # the operator fixed the printer
    row.locator("a.retry").click()
    sync_api.expect(page.locator("h1")).to_have_text("Retry parked event?")
    page.fill("input[name=token]", WRITE_TOKEN)
    page.click("#confirm-form button")  # the browser refuses: the box is not ticked yet
    assert "/projections/confirm?" in page.url
    assert [d.status for d in world.target.dead_letters("invoicing", status=None)] == ["parked"]
    page.check("input[name=confirm]")
    page.click("#confirm-form button")
    sync_api.expect(page.locator("#done")).to_contain_text(f"retried {world.poison_event_id}")
    sync_api.expect(row).to_contain_text("retried")
    assert world.projection.invoices == ["invoice-1", "invoice-2"]


def test_the_live_tail_shows_an_event_appended_after_the_page_opened(page, world) -> None:
    page.goto("/log")
    sync_api.expect(page.locator("#live-status")).to_have_text("live")
    stored = world.store.append("order-42", [NewEvent("OrderPlaced", {"total": "99.00"})])
    first = page.locator("#live-tail tbody tr").first
    sync_api.expect(first).to_contain_text("order-42")
    sync_api.expect(first).to_contain_text("OrderPlaced")
    assert first.get_attribute("data-position") == str(stored.position)
    world.store.append("order-43", [NewEvent("OrderShipped")])
    sync_api.expect(page.locator("#live-tail tbody tr").first).to_contain_text("order-43")
    assert page.locator("#live-tail tbody tr").count() == 2
    page.wait_for_timeout(300)  # let the highlight fade a little for the screenshot
    _shot(page, "live-tail")
    first = page.locator("#live-tail tbody tr").nth(1)
    first.locator("a").nth(1).click()  # the version link: the event page
    sync_api.expect(page.locator("#event-type")).to_have_text("OrderPlaced")
    assert re.search(r"/event\?stream=order-42&version=1$", page.url)


def test_sign_in_with_a_read_token_then_browse_and_follow_the_live_tail(browser, world) -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Guarded:
        write_token: str | None = None
        read_tokens: tuple[str, ...] = ("browser-read-token",)

    with serving(explorer_app(world, Guarded())) as url:
        context = browser.new_context(base_url=url)
        page = context.new_page()
        page.set_default_timeout(10_000)
        try:
            page.goto("/log")
            assert "/signin?next=%2Flog" in page.url
            page.fill("input[name=token]", "not-it")
            page.click("#signin-form button")
            sync_api.expect(page.locator("p.error")).to_contain_text("not valid")
            assert context.cookies() == []
            page.fill("input[name=token]", "browser-read-token")
            page.click("#signin-form button")
            page.wait_for_url(re.compile(r"/log$"))
            sync_api.expect(page.locator("#live-status")).to_have_text("live")
            world.store.append("order-77", [NewEvent("OrderPlaced", {"total": "1.00"})])
            sync_api.expect(page.locator("#live-tail tbody tr").first).to_contain_text("order-77")
            (cookie,) = context.cookies()
            assert cookie["httpOnly"] is True
            assert cookie["sameSite"] == "Strict"
            page.click("header form.signout button")
            page.wait_for_url(re.compile(r"/signin$"))
            page.goto("/streams")
            assert "/signin?next=" in page.url
        finally:
            context.close()

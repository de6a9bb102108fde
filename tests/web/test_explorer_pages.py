"""The explorer's pages through Starlette's TestClient: content, escaping, paging, writes."""

from __future__ import annotations

import html
import json
import re
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from eskit import InMemoryEventStore, InvalidInputError, NewEvent, SQLiteEventStore
from eskit.aio import AsyncInMemoryEventStore
from eskit.web.explorer import explorer_routes
from tests.conftest import new_schema_name
from tests.web.explorer_helpers import (
    ACCOUNTS,
    HOSTILE_ID,
    HOSTILE_TEXT,
    WRITE_TOKEN,
    Settings,
    World,
    explorer_app,
    populate,
)
from tests.web.explorer_server import serving

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its test client; the dev group
    # installs httpx, which still works. Drop this once it moves to httpx2.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

BANK = "examples.bank.domain.BankAccount"


BACKENDS = ["sqlite", "postgres"]


def _open(request, directory):
    # PostgreSQL positions pass 2**53 (transaction id and sequence in one number): the
    # pages and the live tail must carry them exactly.
    if request.param == "postgres":
        from eskit.stores.postgres import PostgresEventStore

        return PostgresEventStore(request.getfixturevalue("postgres_dsn"),
                                  schema=new_schema_name())
    return SQLiteEventStore(str(directory / "explorer.db"))


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tmp_path_factory):
    """One populated store per backend for the tests that only read (and must not write)."""
    store = _open(request, tmp_path_factory.mktemp("explorer"))
    yield populate(store)
    store.close()


@pytest.fixture(params=BACKENDS)
def fresh(request, tmp_path):
    """A populated store of its own, for a test that writes."""
    store = _open(request, tmp_path)
    yield populate(store)
    store.close()


@pytest.fixture
def client(world: World):
    with TestClient(explorer_app(world)) as client:
        yield client


@pytest.fixture
def fresh_client(fresh: World):
    with TestClient(explorer_app(fresh)) as client:
        yield client


def _links(page: str, css_class: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(rf'class="{css_class}" href="([^"]+)"', page)]


def _stream_ids(page: str) -> list[str]:
    return [html.unescape(s) for s in re.findall(r'class="stream-link" href="[^"]+">([^<]*)</a>',
                                                  page)]


# -- streams ------------------------------------------------------------------------------


def test_streams_page_lists_every_stream_with_its_event_count(client, world) -> None:
    page = client.get("/streams", params={"limit": 500}).text
    assert f"{ACCOUNTS + 4} streams" in page
    assert set(_stream_ids(page)) == {*(f"account-{n:03d}" for n in range(1, ACCOUNTS + 1)),
                                      HOSTILE_ID, "order-1", "invoice-1", "invoice-2"}
    row = re.search(r'account-003</a></td>\s*<td class="num">(\d+)</td>', page)
    assert row is not None
    assert row.group(1) == "3"


def test_stream_search_by_prefix_keeps_only_that_category(client) -> None:
    page = client.get("/streams", params={"prefix": "invoice-"}).text
    assert _stream_ids(page) == ["invoice-1", "invoice-2"]
    assert "2 streams match" in page


def test_event_type_filter_keeps_streams_holding_that_type_and_counts_them(client) -> None:
    page = client.get("/streams", params={"type": "MoneyWithdrawn"}).text
    assert _stream_ids(page) == [f"account-{n:03d}" for n in range(3, ACCOUNTS + 1, 3)]
    assert "<th>MoneyWithdrawn</th>" in page


class _FilteringStore(InMemoryEventStore):
    """A store whose read_all filters by type and prefix itself (and says what it was asked)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[dict] = []

    def read_all(self, from_position=0, limit=None, *, on_undecodable="raise",
                 event_types=None, stream_prefixes=None):
        self.asked.append({"event_types": event_types, "stream_prefixes": stream_prefixes})
        return (e for e in super().read_all(from_position, limit, on_undecodable=on_undecodable)
                if (event_types is None or e.event_type in event_types)
                and (stream_prefixes is None
                     or any(str(e.aggregate_id).startswith(p) for p in stream_prefixes)))


def test_the_type_filter_is_passed_down_to_a_store_that_filters_itself() -> None:
    world = populate(_FilteringStore())
    world.store.asked.clear()
    with TestClient(explorer_app(world)) as client:
        page = client.get("/streams", params={"type": "MoneyWithdrawn", "prefix": "account-01"})
    assert _stream_ids(page.text) == ["account-012"]
    assert world.store.asked == [{"event_types": ["MoneyWithdrawn"],
                                  "stream_prefixes": ["account-01"]}]


def test_cursor_paging_visits_every_stream_once_in_id_order(client) -> None:
    seen: list[str] = []
    url = "/streams?limit=5"
    pages = 0
    while url:
        page = client.get(url).text
        seen += _stream_ids(page)
        next_link = re.search(r'id="next-page" href="([^"]+)"', page)
        url = html.unescape(next_link.group(1)) if next_link else ""
        pages += 1
    assert pages == 4  # 16 streams, 5 a page
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) == ACCOUNTS + 4


def test_a_cursor_page_does_not_shift_when_streams_are_added_before_it(fresh_client, fresh) -> None:
    query = {"limit": 3, "after": "account-003"}
    second = fresh_client.get("/streams", params=query).text
    fresh.store.append("account-000", [NewEvent("Noise")])
    fresh.store.append("aardvark", [NewEvent("Noise")])
    assert _stream_ids(fresh_client.get("/streams", params=query).text) \
        == _stream_ids(second) == ["account-004", "account-005", "account-006"]


# -- hostile input --------------------------------------------------------------------------


def test_a_script_in_a_stream_id_or_payload_is_shown_as_text_never_markup(client, world) -> None:
    event = world.store.read_stream(HOSTILE_ID)[0]
    pages = [
        client.get("/streams").text,
        client.get("/streams", params={"prefix": "<script>"}).text,
        client.get("/stream", params={"stream": HOSTILE_ID}).text,
        client.get("/event", params={"stream": HOSTILE_ID, "version": 1}).text,
        client.get("/event", params={"id": str(event.event_id)}).text,
        client.get("/log").text,
        client.get("/correlation", params={"id": HOSTILE_TEXT}).text,
        client.get("/stream", params={"stream": HOSTILE_TEXT}).text,  # the 404 page
        client.get("/state", params={"stream": HOSTILE_ID, "class": HOSTILE_TEXT}).text,
    ]
    for page in pages:
        assert "<script>alert" not in page
        assert "<img src=x" not in page
    assert "&lt;script&gt;alert(&#39;id&#39;)&lt;/script&gt;" in pages[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[3]  # payload and metadata
    # The stream id survives the round trip through a link.
    link = _links(pages[0], "stream-link")
    assert f"/stream?stream={HOSTILE_ID}" not in link
    hostile_link = next(h for h in link if "script" in h)
    assert HOSTILE_ID in html.unescape(client.get(hostile_link).text)


def test_stream_ids_with_slashes_percent_and_unicode_round_trip_through_links(
    fresh_client, fresh
) -> None:
    odd = "a/b?c=d&e%2F #zoë\u202e"
    fresh.store.append(odd, [NewEvent("Odd", {"n": 1})])
    page = fresh_client.get("/streams", params={"prefix": "a/"}).text
    (link,) = _links(page, "stream-link")
    stream_page = fresh_client.get(link).text
    assert html.escape(odd) in stream_page
    (event_link,) = _links(stream_page, "event-link")
    assert 'id="event-type">Odd<' in fresh_client.get(event_link).text


# -- stream, event, causation ------------------------------------------------------------


def test_stream_page_is_the_timeline_in_version_order(client) -> None:
    page = client.get("/stream", params={"stream": "account-003"}).text
    assert re.findall(r'class="type">(\w+)<', page) == [
        "AccountOpened", "MoneyDeposited", "MoneyWithdrawn"]
    assert client.get("/stream", params={"stream": "nobody"}).status_code == 404


def test_stream_timeline_pages_by_version(fresh_client, fresh) -> None:
    fresh.store.append("long", [NewEvent("Tick", {"n": n}) for n in range(7)])
    page = fresh_client.get("/stream", params={"stream": "long", "limit": 3}).text
    assert page.count('class="event-link"') == 3
    later = html.unescape(re.search(r'id="next-page" href="([^"]+)"', page).group(1))
    assert re.findall(r'class="version">v(\d+)<', fresh_client.get(later).text) == ["4", "5", "6"]


def test_event_page_shows_payload_metadata_and_links_the_cause(client, world) -> None:
    page = client.get("/event", params={"id": str(world.invoice_event_id)}).text
    assert '"order": "order-1"' in html.unescape(page)
    (cause,) = [html.unescape(h) for h in re.findall(r'id="causation_id" href="([^"]+)"', page)]
    caused_by = client.get(cause).text
    assert f'id="event-id">{world.order_event_id}<' in caused_by
    assert 'id="event-type">OrderPlaced<' in caused_by


def test_correlation_page_lists_the_cause_and_its_effects(client, world) -> None:
    page = client.get("/correlation", params={"id": str(world.order_event_id)}).text
    assert re.findall(r'<td>(\w+)</td>\s*<td>\d{4}-', page) == ["OrderPlaced", "InvoiceIssued"]


def test_a_causation_id_that_is_no_event_id_is_shown_as_text(fresh_client, fresh) -> None:
    fresh.store.append("cmd", [NewEvent("Done", {}, {"causation_id": "cmd-42"})])
    page = fresh_client.get("/event", params={"stream": "cmd", "version": 1}).text
    assert "<code>cmd-42</code>" in page
    assert 'id="causation_id"' not in page


def test_unknown_or_malformed_event_addresses_are_404_and_400(client) -> None:
    assert client.get("/event", params={"id": "00000000-0000-0000-0000-000000000001"}
                      ).status_code == 404
    assert client.get("/event", params={"id": "nope"}).status_code == 400
    assert client.get("/event", params={"stream": "order-1", "version": 2}).status_code == 404
    assert client.get("/event", params={"stream": "order-1"}).status_code == 400


@pytest.mark.parametrize("query", [
    {"limit": "0"}, {"limit": "501"}, {"limit": "x"}, {"after": "-1"}, {"after": "9" * 41},
])
def test_malformed_paging_parameters_are_400_not_500(client, query) -> None:
    assert client.get("/log", params=query).status_code == 400


# -- time travel ------------------------------------------------------------------------------


def test_state_at_a_version_is_the_aggregate_as_it_was_then(client) -> None:
    page = html.unescape(client.get("/state", params={
        "stream": "account-003", "class": BANK, "version": 2}).text)
    assert '"balance": "13.00"' in page
    assert "State at version 2 of 3" in page
    now = html.unescape(client.get("/state", params={"stream": "account-003", "class": BANK}).text)
    assert '"balance": "8.00"' in now


def test_state_at_a_time_before_the_first_event_is_refused_and_now_is_the_head(client) -> None:
    later = datetime.now(UTC).isoformat()
    page = html.unescape(client.get("/state", params={
        "stream": "account-003", "class": BANK, "at": later}).text)
    assert "State at version 3 of 3" in page
    naive = client.get("/state", params={"stream": "account-003", "class": BANK,
                                         "at": "2020-01-01T00:00:00"})
    assert naive.status_code == 400
    assert "timezone" in naive.text


def test_diff_between_two_versions_names_the_changed_fields(client) -> None:
    page = html.unescape(client.get("/state", params={
        "stream": "account-003", "class": BANK, "before": 1, "after": 3}).text)
    fields = re.findall(r'<tr class="(\w+)">\s*<td>(\w+)</td>', page)
    assert ("changed", "balance") in fields
    assert all(name != "owner" for _, name in fields)
    assert "From version 1 to version 3" in page


def test_time_travel_refuses_unregistered_classes_and_versions_past_the_head(client) -> None:
    assert client.get("/state", params={"stream": "account-003", "class": "os.system"}
                      ).status_code == 400
    assert client.get("/state", params={"stream": "account-003", "class": BANK, "version": 4}
                      ).status_code == 404
    assert client.get("/state", params={"stream": "nobody", "class": BANK}).status_code == 404


# -- log, health ------------------------------------------------------------------------------


def test_global_log_pages_forward_by_position(client, world) -> None:
    first = client.get("/log", params={"limit": 10}).text
    later = html.unescape(re.search(r'id="next-page" href="([^"]+)"', first).group(1))
    positions = [int(p) for p in re.findall(r'<td class="num">(\d+)</td>\s*<td><a',
                                            first + client.get(later).text)]
    everything = [e.position for e in world.store.read_all()]
    assert positions == everything[:20]
    assert f'data-src="/log/live?after={world.store.head_position()}"' in first


def test_health_page_reports_the_store_and_the_projection(client) -> None:
    page = client.get("/health").text
    # Parking moved the projection on: it is caught up, so healthy.
    assert 'id="health-status">ok<' in page
    assert "<td>projection invoicing</td>" in page
    assert "0 events behind" in page
    assert "readable in" in page


# -- projections and the writes ---------------------------------------------------------------


def _act(client, world, **form):
    data = {"action": "retry", "projection": "invoicing", "event_id": str(world.poison_event_id),
            "token": WRITE_TOKEN, "confirm": "yes", **form}
    return client.post("/projections/parked", data={k: v for k, v in data.items() if v is not None},
                       follow_redirects=False)


def _status(world) -> str:
    (letter,) = world.target.dead_letters("invoicing", status=None)
    return letter.status


def test_projections_page_shows_checkpoint_error_and_parked_event(client, world) -> None:
    page = client.get("/projections").text
    assert "the invoice printer is out of paper" in page
    assert f'data-event-id="{world.poison_event_id}"' in page
    assert "0 events behind" in page
    assert "Retry…" in page
    assert "Skip…" in page


@pytest.mark.parametrize(("form", "status"), [
    ({"token": None}, 403), ({"token": "wrong"}, 403), ({"confirm": None}, 400),
    ({"confirm": "no"}, 400), ({"action": "delete"}, 400),
])
def test_a_write_without_token_or_confirmation_changes_nothing(client, world, form, status) -> None:
    world.projection.broken = False  # a retry would succeed if it were let through
    try:
        assert _act(client, world, **form).status_code == status
    finally:
        world.projection.broken = True
    assert _status(world) == "parked"
    assert world.projection.invoices == ["invoice-1"]


def test_a_read_only_explorer_refuses_writes_even_with_a_token(world) -> None:
    with TestClient(explorer_app(world, Settings(write_token=None))) as client:
        assert "Retry…" not in client.get("/projections").text
        assert _act(client, world).status_code == 403
    assert _status(world) == "parked"


def test_any_of_several_write_tokens_is_accepted(fresh) -> None:
    @dataclass(frozen=True)
    class ManyTokens:
        write_tokens: tuple[str, ...] = ("first-token", WRITE_TOKEN)

    with TestClient(explorer_app(fresh, ManyTokens())) as client:
        assert _act(client, fresh, action="skip", token="other").status_code == 403
        assert _act(client, fresh, action="skip").status_code == 303
    assert _status(fresh) == "skipped"


def test_write_token_none_keeps_it_read_only_even_beside_write_tokens(world) -> None:
    @dataclass(frozen=True)
    class SwitchedOff:  # as eskit.web's settings say read_only=True
        write_token: str | None = None
        write_tokens: tuple[str, ...] = (WRITE_TOKEN,)

    with TestClient(explorer_app(world, SwitchedOff())) as client:
        assert _act(client, world, action="skip").status_code == 403
    assert _status(world) == "parked"


def test_an_empty_write_token_is_refused_at_start(world) -> None:
    with pytest.raises(InvalidInputError, match="non-empty"):
        explorer_app(world, Settings(write_token=""))


def test_confirmed_retry_with_the_token_handles_the_parked_event_once(fresh_client, fresh) -> None:
    confirm = fresh_client.get("/projections/confirm", params={
        "action": "retry", "projection": "invoicing", "event_id": str(fresh.poison_event_id)})
    assert 'name="confirm" value="yes"' in confirm.text
    assert _status(fresh) == "parked"
    fresh.projection.broken = False
    response = _act(fresh_client, fresh)
    assert response.status_code == 303
    assert _status(fresh) == "retried"
    assert fresh.projection.invoices == ["invoice-1", "invoice-2"]
    assert "Done: retried" in fresh_client.get(response.headers["location"]).text
    assert _act(fresh_client, fresh).status_code == 404  # no longer parked: not applied twice
    assert fresh.projection.invoices == ["invoice-1", "invoice-2"]


def test_a_retry_whose_handler_fails_again_leaves_the_event_parked(client, world) -> None:
    assert world.projection.broken
    response = _act(client, world)
    assert response.status_code == 409
    assert "out of paper" in response.text
    assert _status(world) == "parked"


def test_skip_with_the_bearer_header_marks_the_event_skipped(fresh_client, fresh) -> None:
    response = fresh_client.post("/projections/parked", data={
        "action": "skip", "projection": "invoicing", "event_id": str(fresh.poison_event_id),
        "confirm": "yes"}, headers={"Authorization": f"Bearer {WRITE_TOKEN}"},
        follow_redirects=False)
    assert response.status_code == 303
    assert _status(fresh) == "skipped"
    assert fresh.projection.invoices == ["invoice-1"]


# -- wiring ----------------------------------------------------------------------------------------


def test_links_carry_the_mount_point_when_mounted_under_a_path(world) -> None:
    app = Starlette(routes=[Mount("/explore", routes=explorer_routes(world.store, Settings()))])
    with TestClient(app) as client:
        page = client.get("/explore/streams").text
        assert 'href="/explore/stream?stream=account-001"' in page
        assert 'href="/explore/static/explorer.css"' in page
        assert client.get("/explore/static/explorer.css").status_code == 200


def test_an_async_store_backed_by_a_sync_one_is_explored_through_that_one() -> None:
    store = AsyncInMemoryEventStore()
    store.sync_store.append("async-1", [NewEvent("Happened")])
    app = Starlette(routes=explorer_routes(store, Settings()))  # type: ignore[arg-type]
    with TestClient(app) as client:
        assert "async-1" in client.get("/streams").text


def test_explorer_routes_refuses_what_it_cannot_serve() -> None:
    with pytest.raises(InvalidInputError, match="sync eskit EventStore"):
        explorer_routes(object(), Settings())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="write_token"):
        explorer_routes(InMemoryEventStore(), object())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="Aggregate subclasses"):
        explorer_routes(InMemoryEventStore(), Settings(), aggregates=[Decimal])  # type: ignore[list-item]


# -- the live tail (server-sent events, on a real server: the stream never ends) --------------


def test_live_tail_resumes_after_last_event_id_with_nothing_missed_or_repeated(fresh) -> None:
    positions = [e.position for e in fresh.store.read_all()]
    resume_after = positions[-3]
    with serving(explorer_app(fresh)) as url, httpx.Client(base_url=url, timeout=10) as http, \
            http.stream("GET", "/log/live", params={"after": 0},
                        headers={"Last-Event-ID": str(resume_after)}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        received: list[int] = []
        data: list[dict] = []
        for line in response.iter_lines():
            if line.startswith("id: "):
                received.append(int(line[4:]))
            elif line.startswith("data: "):
                data.append(json.loads(line[6:]))
            if len(received) == 2 and len(data) == 2:  # once the history has come: a live one
                data.append({})  # (a marker, so this appends once)
                fresh.store.append(HOSTILE_ID, [NewEvent("Later", {"x": HOSTILE_TEXT})])
            if len(received) == 3 and len(data) == 4:
                break
    stored = [e.position for e in fresh.store.read_all(resume_after)]
    assert received == stored == [*positions[-2:], stored[-1]]
    assert data[-1]["stream"] == HOSTILE_ID  # JSON text; the page inserts it as text
    assert data[-1]["position"] == str(stored[-1])  # a string: may pass 2**53


def test_a_live_tail_response_ends_after_its_lifetime_so_servers_can_stop(
    world, monkeypatch
) -> None:
    monkeypatch.setattr("eskit.web.explorer._live.MAX_SECONDS", 0.5)
    head = world.store.head_position()
    with serving(explorer_app(world)) as url, httpx.Client(base_url=url, timeout=10) as http:
        started = time.monotonic()
        body = http.get("/log/live", params={"after": head}).text  # returns: the stream ended
        assert time.monotonic() - started < 5
    assert body.startswith("retry: 1000")  # the browser comes back after a second


def test_live_tail_needs_a_position_to_start_from(client) -> None:
    assert client.get("/log/live").status_code == 400
    assert client.get("/log/live", headers={"Last-Event-ID": "x"}).status_code == 400


# -- inside eskit.web's app ----------------------------------------------------------------------


def test_create_app_serves_the_explorer_and_its_writes_follow_the_web_settings(fresh) -> None:
    from eskit.web import WebSettings, create_app

    read_only = create_app(fresh.store, settings=WebSettings(write_tokens=(WRITE_TOKEN,),
                                                               read_only=True))
    with TestClient(read_only) as client:
        assert "account-001" in client.get("/streams").text
        refused = _act(client, fresh, action="skip")
        assert refused.status_code == 403
        assert "read-only" in refused.text
    writable = create_app(fresh.store, settings=WebSettings(write_tokens=("other", WRITE_TOKEN)))
    with TestClient(writable) as client:
        assert _act(client, fresh, action="skip", token="wrong").status_code == 403
        for token in ("other", WRITE_TOKEN):  # every write token of the settings
            # Past the token and the confirmation; create_app gives no projection target yet.
            response = _act(client, fresh, action="skip", token=token)
            assert response.status_code == 404
            assert "no projection target" in response.text
    assert _status(fresh) == "parked"

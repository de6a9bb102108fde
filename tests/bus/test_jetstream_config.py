"""The JetStream URL options and the stream-id-to-subject mapping (pure: no server)."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eskit.bus._jetstream_config import MAX_TOKEN_CHARS, parse_url, subject_for, subject_token
from eskit.bus.jetstream import JetStreamSink, JetStreamSource
from eskit.errors import InvalidInputError

NATS_TOKEN = re.compile(r"[^\s.*>]+")  # what a literal subject token may hold

ids = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=700)


@given(ids)
def test_every_token_is_one_literal_nats_token_of_bounded_length(text: str) -> None:
    token = subject_token(text)
    assert NATS_TOKEN.fullmatch(token)
    assert len(token) <= MAX_TOKEN_CHARS


@given(ids)
def test_a_short_token_spells_its_text_back(text: str) -> None:
    token = subject_token(text)
    if "~" not in token:  # not cut: percent-decoding gives the text back, so it is injective
        assert unquote_to_bytes(token).decode() == text or (text == "" and token == "%")


@given(ids, ids)
def test_different_texts_get_different_tokens(a: str, b: str) -> None:
    if a != b:
        assert subject_token(a) != subject_token(b)


def test_the_mapping_keeps_plain_ids_readable() -> None:
    assert subject_for("eskit", "account", "account-42") == "eskit.account.account-42"
    assert subject_token("a.b c*>") == "a%2Eb%20c%2A%3E"
    assert subject_token("") == "%"
    assert subject_token("ü") == "%C3%BC"
    long = subject_token("x" * 3000)
    assert long.startswith("x" * 160 + "~")
    assert subject_token("x" * 3000) == long  # deterministic


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        subject_token("a\udc80")


def test_url_defaults_and_credentials_stay_out_of_the_destination() -> None:
    opts = parse_url("nats://alice:s3cret@example.test:4333")
    assert opts.server == "nats://alice:s3cret@example.test:4333"
    assert (opts.stream, opts.prefix, opts.timeout, opts.dupe_window) == ("ESKIT", "eskit", 10, 120)
    sink = JetStreamSink.from_url("nats://alice:s3cret@example.test/?stream=S1&prefix=a.b")
    assert sink.destination == "nats://example.test:4222 stream S1 (a.b.>)"
    source = JetStreamSource.from_url("tls://u:pw@h/?filter=account.*", group="fraud")
    assert "pw" not in source.destination
    assert "a.b" not in source.destination
    assert "eskit.account.*" in source.destination


@pytest.mark.parametrize(
    "query",
    [
        "nope=1", "stream=", "stream=a.b", "stream=a b", "prefix=a..b", "prefix=a.*", "prefix=>",
        "timeout=0", "timeout=-1", "timeout=nan", "timeout=inf", "timeout=x", "in_flight=1.5",
        "in_flight=0", "batch=5000", "replicas=7", "storage=disk", "max_deliver=0",
        "filter=a.>.b", "filter=a..b", "filter=a b", "stream=A&stream=B", "ack_wait=",
        "dupe_window=-5", "max_age=-1", "connect_timeout=0",
    ],
)
def test_a_bad_option_is_an_invalid_input_error(query: str) -> None:
    with pytest.raises(InvalidInputError):
        JetStreamSink.from_url(f"nats://127.0.0.1:4222/?{query}")


@pytest.mark.parametrize(
    "url", ["amqp://h/", "nats://", "nats://h:99999/", "nats://h/path", "nats://h/#x", 42],
)
def test_a_bad_url_is_an_invalid_input_error(url: object) -> None:
    with pytest.raises(InvalidInputError):
        JetStreamSink.from_url(url)  # type: ignore[arg-type]


@pytest.mark.parametrize("group", ["", "a.b", "a b", "a*", "x" * 101, None, "ü"])
def test_a_bad_group_is_an_invalid_input_error(group: object) -> None:
    with pytest.raises(InvalidInputError):
        JetStreamSource.from_url("nats://127.0.0.1/", group=group)  # type: ignore[arg-type]


def test_without_nats_py_the_module_says_which_extra_to_install() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['nats'] = None\n"
        "from eskit.errors import MissingExtraError\n"
        "try:\n    import eskit.bus.jetstream\nexcept MissingExtraError as e:\n"
        "    print('extra', e.extra)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "extra nats"

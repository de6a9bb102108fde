"""Retry: bounded attempts, capped jittered waits, only ConcurrencyError retried."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eskit.aio
from eskit import CommandRetriesExhausted, ConcurrencyError, InvalidInputError, Retry, retry


def conflict(n: int = 1) -> ConcurrencyError:
    return ConcurrencyError("s-1", n, n + 1)


class Flaky:
    """Conflicts ``failures`` times, then returns ``"done"``."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise conflict(self.calls)
        return "done"


def test_delays_grow_by_the_multiplier_up_to_the_cap_without_jitter() -> None:
    policy = Retry(max_attempts=10, first_delay=0.01, max_delay=0.05, multiplier=2, jitter=0)
    assert [policy.delay(n) for n in range(1, 6)] == pytest.approx([0.01, 0.02, 0.04, 0.05, 0.05])


def test_jitter_takes_at_most_its_fraction_off_the_delay() -> None:
    policy = Retry(first_delay=0.04, jitter=0.5)
    assert policy.delay(1, rand=lambda: 0.0) == pytest.approx(0.04)
    assert policy.delay(1, rand=lambda: 0.999999) == pytest.approx(0.02, rel=1e-4)
    full = Retry(first_delay=0.04, jitter=1.0)
    assert 0.0 < full.delay(1, rand=lambda: 0.5) == pytest.approx(0.02)


def test_a_huge_attempt_number_does_not_overflow_the_delay() -> None:
    policy = Retry(max_attempts=1000, first_delay=1, max_delay=2, multiplier=100, jitter=0)
    assert policy.delay(999) == 2.0


def test_after_conflict_gives_up_on_the_last_attempt_naming_attempts_and_conflict() -> None:
    policy = Retry(max_attempts=3, jitter=0)
    assert policy.after_conflict(1, conflict()) == policy.delay(1)
    assert policy.after_conflict(2, conflict()) == policy.delay(2)
    last = conflict(7)
    with pytest.raises(CommandRetriesExhausted) as raised:
        policy.after_conflict(3, last)
    assert raised.value.attempts == 3
    assert raised.value.last_conflict is last
    assert raised.value.__cause__ is last
    assert raised.value.stream_id == "s-1"
    assert "each of its 3 attempts" in str(raised.value)
    assert "expected version 7" in str(
        raised.value
    )


@pytest.mark.parametrize("bad", [
    {"max_attempts": 0}, {"max_attempts": 1001}, {"max_attempts": 2.0}, {"max_attempts": True},
    {"first_delay": -1}, {"first_delay": float("nan")}, {"max_delay": float("inf")},
    {"multiplier": 0.5}, {"jitter": 1.5}, {"jitter": "0.1"},
])
def test_a_malformed_policy_is_refused_when_made(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        Retry(**bad)  # type: ignore[arg-type]


def test_retry_returns_once_the_function_stops_conflicting() -> None:
    flaky = Flaky(failures=2)
    assert retry(flaky, Retry(max_attempts=3, first_delay=0)) == "done"
    assert flaky.calls == 3


def test_retry_gives_up_after_max_attempts_calls_and_never_calls_again() -> None:
    flaky = Flaky(failures=10)
    with pytest.raises(CommandRetriesExhausted) as raised:
        retry(flaky, Retry(max_attempts=4, first_delay=0))
    assert flaky.calls == 4
    assert raised.value.attempts == 4


def test_retry_lets_any_other_error_through_at_once() -> None:
    calls = []

    def refuses() -> None:
        calls.append(1)
        raise ValueError("insufficient funds")

    with pytest.raises(ValueError, match="insufficient funds"):
        retry(refuses, Retry(max_attempts=5, first_delay=0))
    assert calls == [1]


def test_a_nested_retry_does_not_multiply_attempts() -> None:
    flaky = Flaky(failures=100)
    inner = Retry(max_attempts=3, first_delay=0)
    with pytest.raises(CommandRetriesExhausted):
        retry(lambda: retry(flaky, inner), Retry(max_attempts=3, first_delay=0))
    assert flaky.calls == 3  # the inner give-up is no ConcurrencyError to the outer one


def test_retry_sleeps_between_attempts_as_the_policy_says() -> None:
    policy = Retry(max_attempts=3, first_delay=0.05, multiplier=1, jitter=0)
    started = time.monotonic()
    retry(Flaky(failures=2), policy)
    assert time.monotonic() - started >= 0.1


def test_retry_refuses_a_non_policy_or_a_non_callable() -> None:
    with pytest.raises(InvalidInputError, match="Retry policy"):
        retry(lambda: 1, 3)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="callable"):
        retry(42)  # type: ignore[arg-type]


def test_async_retry_awaits_until_the_coroutine_stops_conflicting() -> None:
    flaky = Flaky(failures=2)

    async def command() -> str:
        return flaky()

    assert asyncio.run(eskit.aio.retry(command, Retry(max_attempts=3, first_delay=0))) == "done"
    assert flaky.calls == 3


def test_async_retry_gives_up_with_the_same_typed_error() -> None:
    flaky = Flaky(failures=10)

    async def command() -> str:
        return flaky()

    with pytest.raises(CommandRetriesExhausted) as raised:
        asyncio.run(eskit.aio.retry(command, Retry(max_attempts=2, first_delay=0)))
    assert raised.value.attempts == 2
    assert flaky.calls == 2


@settings(max_examples=100, deadline=None)
@given(
    max_attempts=st.integers(1, 1000),
    first_delay=st.floats(0, 60),
    max_delay=st.floats(0, 300),
    multiplier=st.floats(1, 100),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 2000),
    rand=st.floats(0, 1, exclude_max=True),
)
def test_every_policy_waits_between_zero_and_max_delay_and_stops_at_max_attempts(
    max_attempts: int, first_delay: float, max_delay: float, multiplier: float, jitter: float,
    attempt: int, rand: float,
) -> None:
    policy = Retry(max_attempts, first_delay, max_delay, multiplier, jitter)
    assert 0.0 <= policy.delay(attempt, rand=lambda: rand) <= max_delay
    if attempt >= max_attempts:
        with pytest.raises(CommandRetriesExhausted):
            policy.after_conflict(attempt, conflict())
    else:
        assert policy.after_conflict(attempt, conflict(), rand=lambda: rand) == policy.delay(
            attempt, rand=lambda: rand
        )

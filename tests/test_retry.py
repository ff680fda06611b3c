"""What is retried, how long it waits, and when it gives up: sleeps recorded, never slept."""

import random
import threading

import pytest

from tailer.errors import ApiError, TransientError
from tailer.retry import (
    AuthRejected,
    RetryPolicy,
    auth_retrying,
    parse_retry_after,
    transient_retrying,
)


def failing(errors):
    """A function that raises each of ``errors`` in turn, then returns "ok"."""
    pending = list(errors)
    calls = []

    def call():
        calls.append(1)
        if pending:
            raise pending.pop(0)
        return "ok"

    call.calls = calls
    return call


def test_transient_errors_are_retried_until_success():
    slept = []
    fn = failing([TransientError("503"), TransientError("reset"), TransientError("bad json")])
    retrying = transient_retrying(RetryPolicy(), sleep=slept.append, rng=random.Random(1))
    assert retrying(fn) == "ok"
    assert len(fn.calls) == 4
    assert len(slept) == 3


def test_backoff_is_full_jitter_and_capped():
    """Each wait is drawn from zero to a ceiling that doubles up to the cap: full jitter."""
    policy = RetryPolicy(base=1.0, cap=8.0)

    def waits(seed):
        slept = []
        fn = failing([TransientError("x")] * 200)
        transient_retrying(policy, sleep=slept.append, rng=random.Random(seed))(fn)
        return slept

    slept = waits(1)
    ceilings = [min(8.0, 2.0**n) for n in range(len(slept))]
    assert all(0 <= s <= c for s, c in zip(slept, ceilings, strict=True))
    capped = slept[3:]  # the ceiling has reached the cap
    assert min(capped) < 2.0 and max(capped) > 6.0  # spread over the whole range, not near it
    assert 3.0 < sum(capped) / len(capped) < 5.0  # centred on half the cap
    assert len(set(capped)) == len(capped)
    assert waits(1) == slept and waits(2) != slept  # the injected generator makes the draws


def test_retry_after_is_honoured():
    slept = []
    fn = failing([TransientError("429", status=429, retry_after=7)])
    transient_retrying(RetryPolicy(), sleep=slept.append, rng=random.Random(1))(fn)
    assert 7 <= slept[0] <= 8


def test_absurd_retry_after_is_capped():
    slept = []
    fn = failing([TransientError("429", status=429, retry_after=10**9)])
    policy = RetryPolicy(retry_after_cap=900)
    transient_retrying(policy, sleep=slept.append)(fn)
    assert slept[0] <= 901


@pytest.mark.parametrize("error", [ApiError("refused"), AuthRejected("401"), ValueError("bug")])
def test_non_transient_errors_are_not_retried(error):
    slept = []
    fn = failing([error])
    with pytest.raises(type(error)):
        transient_retrying(RetryPolicy(), sleep=slept.append)(fn)
    assert slept == []
    assert len(fn.calls) == 1


def test_gives_up_after_max_attempts_with_the_last_error():
    fn = failing([TransientError(f"n{i}") for i in range(10)])
    with pytest.raises(TransientError, match="n2"):
        transient_retrying(RetryPolicy(max_attempts=3), sleep=lambda s: None)(fn)


def test_a_stop_request_ends_the_retries():
    stop = threading.Event()
    fn = failing([TransientError("x")] * 100)

    def sleep(seconds):
        stop.set()

    with pytest.raises(TransientError):
        transient_retrying(RetryPolicy(), sleep=sleep, stop_event=stop)(fn)
    assert len(fn.calls) == 2  # the attempt after the interrupted sleep is the last


def test_refused_signatures_are_retried_a_few_times():
    slept = []
    fn = failing([AuthRejected("401")] * 5)
    with pytest.raises(AuthRejected):
        auth_retrying(RetryPolicy(auth_attempts=3), sleep=slept.append)(fn)
    assert len(fn.calls) == 3
    assert len(slept) == 2


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0", 0.0), ("-3", 0.0), ("", None), (None, None), ("soon", None), ("nan", None)],
)
def test_retry_after_header_parsing(header, expected):
    assert parse_retry_after(header) == expected


def test_retry_after_http_date():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=lambda: 1445412500.0) == 10.0

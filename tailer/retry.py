"""What is transient, and the tenacity policies built from configuration."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import tenacity
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
)
from tenacity.stop import stop_base

from tailer import logs
from tailer.errors import QcTailError, TransientError

log = logs.get_logger(__name__)

Sleep = Callable[[float], None]


class AuthRejected(QcTailError):
    """One signed request was refused; re-signed and retried before it becomes an AuthError."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How patiently to retry; data, so tests and config can build it."""

    base: float = 1.0  # first backoff ceiling, seconds
    cap: float = 300.0  # no backoff ceiling grows past this
    max_attempts: int | None = None  # None: transient failures are retried until stopped
    max_time: float | None = None  # give up after this many seconds of failing
    auth_attempts: int = 3  # signed requests refused before credentials are declared bad
    auth_base: float = 1.0
    retry_after_cap: float = 900.0  # a Retry-After longer than this is not believed


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class _WaitRetryAfterOrJitter:
    """Full-jitter exponential backoff, unless the server said how long to wait."""

    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._ceiling = tenacity.wait_exponential(multiplier=policy.base, max=policy.cap)
        self._rng = rng  # injected, so a seeded test sees the very draws the daemon makes

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TransientError) and exc.retry_after is not None:
            return min(exc.retry_after, self._policy.retry_after_cap) + self._rng.uniform(0, 1)
        return self._rng.uniform(0.0, self._ceiling(state))


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.debug("request_retry", attempt=state.attempt_number, wait=round(wait, 2), error=str(exc))


def transient_retrying(
    policy: RetryPolicy,
    *,
    sleep: Sleep = time.sleep,
    stop_event: threading.Event | None = None,
    rng: random.Random | None = None,
) -> Retrying:
    """Retry TransientError with capped full jitter, honouring Retry-After."""
    stop: stop_base = stop_never
    if policy.max_attempts is not None:
        stop = stop | stop_after_attempt(policy.max_attempts)
    if policy.max_time is not None:
        stop = stop | stop_after_delay(policy.max_time)
    if stop_event is not None:
        stop = stop | tenacity.stop_when_event_set(stop_event)
    return Retrying(
        retry=retry_if_exception_type(TransientError),
        wait=_WaitRetryAfterOrJitter(policy, rng or random.Random()),
        stop=stop,
        sleep=sleep,
        before_sleep=_log_retry,
        reraise=True,
    )


def auth_retrying(
    policy: RetryPolicy, *, sleep: Sleep = time.sleep, stop_event: threading.Event | None = None
) -> Retrying:
    """Re-sign and retry a refused request a few times: a blip, a skew just corrected."""
    stop: stop_base = stop_after_attempt(policy.auth_attempts)
    if stop_event is not None:
        stop = stop | tenacity.stop_when_event_set(stop_event)
    return Retrying(
        retry=retry_if_exception_type(AuthRejected),
        wait=tenacity.wait_exponential(multiplier=policy.auth_base, max=policy.cap),
        stop=stop,
        sleep=sleep,
        before_sleep=_log_retry,
        reraise=True,
    )

"""Polls in hand: side by side on a pool, outcomes handed back to the starting thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextvars import ContextVar

import pytest

from tailer.polls import Polls, Result
from tailer.shutdown import Shutdown, Stopping

GUARD = 20.0  # seconds: a hang guard, never a measure

WHO: ContextVar[str] = ContextVar("who", default="nobody")


class Outcomes:
    """Each outcome handed back: the value, or the exception's type, with the thread."""

    def __init__(self) -> None:
        self.got: list[tuple[str, object, str]] = []

    def then(self, key: str) -> Callable[[Result], None]:
        def handle(result: Result) -> None:
            try:
                value: object = result()
            except BaseException as exc:  # recorded, for the assertion
                value = type(exc)
            self.got.append((key, value, threading.current_thread().name))

        return handle


def collect_until(polls: Polls, count: int) -> int:
    collected = 0
    for _ in range(200):
        collected += polls.collect()
        if collected >= count:
            break
        polls.wait(GUARD / 200)
    return collected


def test_one_at_a_time_a_poll_runs_at_once_in_the_calling_thread():
    polls, outcomes = Polls(1, Shutdown()), Outcomes()
    polls.start("a", lambda: threading.current_thread().name, outcomes.then("a"))
    me = threading.current_thread().name
    assert outcomes.got == [("a", me, me)]
    assert polls.in_flight == 0 and polls.collect() == 0


def test_a_stuck_poll_holds_back_no_other_and_its_key_stays_busy():
    polls, outcomes = Polls(4, Shutdown()), Outcomes()
    unstick = threading.Event()
    polls.start("stuck", lambda: unstick.wait(GUARD), outcomes.then("stuck"))
    polls.start("quick", lambda: 7, outcomes.then("quick"))
    try:
        assert collect_until(polls, 1) == 1
        me = threading.current_thread().name
        assert outcomes.got == [("quick", 7, me)]  # handed back in the starting thread
        assert polls.busy("stuck") and not polls.busy("quick") and polls.in_flight == 1
    finally:
        unstick.set()
    assert collect_until(polls, 1) == 1
    assert outcomes.got[-1][:2] == ("stuck", True) and polls.in_flight == 0


def test_a_poll_failure_is_raised_again_where_its_outcome_is_handled():
    polls, outcomes = Polls(2, Shutdown()), Outcomes()

    def fails() -> None:
        raise ValueError("no")

    polls.start("a", fails, outcomes.then("a"))
    assert collect_until(polls, 1) == 1
    assert [value for _, value, _ in outcomes.got] == [ValueError]


def test_a_pooled_poll_runs_in_the_starters_context_as_a_worker_of_the_shutdown():
    """It shows life for the starter's worker (its context), and after a stop it begins no
    critical section (Stopping), as a worker thread would."""
    shutdown = Shutdown()
    polls, outcomes = Polls(2, shutdown), Outcomes()
    WHO.set("the worker")
    polls.start("who", WHO.get, outcomes.then("who"))
    assert collect_until(polls, 1) == 1
    shutdown.request()

    def write() -> None:
        with shutdown.critical():
            pass

    polls.start("write", write, outcomes.then("write"))
    assert collect_until(polls, 1) == 1
    assert [value for _, value, _ in outcomes.got] == ["the worker", Stopping]


@pytest.mark.parametrize("stop", [True, False])
def test_wait_ends_with_a_stop_or_a_poll_ended(stop):
    shutdown = Shutdown()
    polls, outcomes = Polls(2, shutdown), Outcomes()
    release = threading.Event()
    polls.start("a", lambda: release.wait(GUARD), outcomes.then("a"))
    waiter = threading.Thread(target=polls.wait, args=(GUARD,))
    waiter.start()
    if stop:
        shutdown.request()
    else:
        release.set()
    waiter.join(timeout=GUARD)
    release.set()
    assert not waiter.is_alive()

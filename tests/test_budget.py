"""The shared request budget: concurrency, rate cap, and the slow-down a 429 causes."""

import threading
import time
from collections.abc import Callable

from tailer.budget import RequestBudget, requests_of


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_no_more_than_max_in_flight_at_once():
    budget = RequestBudget(max_in_flight=3)
    lock = threading.Lock()
    active, peak = [0], [0]

    def request() -> None:
        with budget.slot():
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.02)
            with lock:
                active[0] -= 1

    threads = [threading.Thread(target=request) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak[0] == 3


def test_a_rate_cap_spaces_request_starts_evenly():
    clock = FakeClock()
    budget = RequestBudget(max_in_flight=4, per_minute=120, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(5):
        with budget.slot():
            starts.append(clock.now)
    assert starts == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_a_429_halves_the_window_and_pauses_everyone():
    clock = FakeClock()
    budget = RequestBudget(max_in_flight=8, clock=clock, sleep=clock.sleep)
    budget.throttled(retry_after=7)
    assert budget.window == 4.0
    with budget.slot():
        assert clock.now == 7.0  # the next request, whoever sends it, waits out Retry-After
    budget.throttled(None)
    budget.throttled(None)
    budget.throttled(None)
    assert budget.window == 1.0  # never below one request in flight


def test_successes_earn_the_window_back_up_to_the_maximum():
    budget = RequestBudget(max_in_flight=4)
    budget.throttled(None)
    assert budget.window == 2.0
    for _ in range(20):
        budget.succeeded()
    assert budget.window == 4.0


def test_one_keys_requests_leave_a_place_to_the_others():
    """A deployment's requests, stuck (a server that never answers), hold all but one place:
    another's request still goes."""
    budget = RequestBudget(max_in_flight=4)
    release, went = threading.Event(), threading.Event()
    holding = threading.Semaphore(0)

    def request(key: str, then: Callable[[], object]) -> None:
        with requests_of(key), budget.slot():
            then()

    def stuck() -> None:
        holding.release()
        release.wait(timeout=20)

    threads = [threading.Thread(target=request, args=("slow", stuck)) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(3):
            assert holding.acquire(timeout=20)
        assert not holding.acquire(timeout=0.2)  # the fourth waits: one place is left
        other = threading.Thread(target=request, args=("steady", went.set))
        other.start()
        assert went.wait(timeout=20)  # and another's request takes it
        other.join(timeout=20)
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=20)


def test_requests_without_a_key_may_take_every_place():
    budget = RequestBudget(max_in_flight=2)
    both = threading.Event()

    def two_at_once() -> None:
        with budget.slot(), budget.slot():
            both.set()

    threading.Thread(target=two_at_once, daemon=True).start()
    assert both.wait(timeout=20)


def test_a_waiting_request_is_not_overtaken_by_one_that_came_later():
    """The place a request frees goes to the one waiting longest: a read-ahead worker that
    frees its place and asks again at once cannot win it back over and over from a request
    its reader waits for."""
    budget = RequestBudget(max_in_flight=1)
    order: list[str] = []
    waiting = threading.Event()

    def patient() -> None:
        waiting.set()
        with budget.slot():
            order.append("waited")

    with budget.slot():
        thread = threading.Thread(target=patient)
        thread.start()
        assert waiting.wait(timeout=20)
        deadline = time.monotonic() + 20
        while not budget.waiting and time.monotonic() < deadline:  # it reached the budget
            time.sleep(0.01)
    for _ in range(20):  # the holder asks again at once, 20 times
        with budget.slot():
            order.append("again")
    thread.join(timeout=20)
    assert order[0] == "waited"


def test_a_request_waiting_out_the_spacing_is_not_overtaken_by_one_that_came_later():
    """With ``per_minute``, a request whose turn came waits for its start time; one asked
    meanwhile (a read-ahead worker asking again at once) waits behind it, not beside it."""
    now = [0.0]
    reader_sleeping, reader_wakes = threading.Event(), threading.Event()

    def sleep(seconds: float) -> None:
        if threading.current_thread().name == "reader" and not reader_wakes.is_set():
            reader_sleeping.set()
            assert reader_wakes.wait(timeout=20)
        else:
            now[0] += seconds

    budget = RequestBudget(max_in_flight=2, per_minute=60, clock=lambda: now[0], sleep=sleep)
    order: list[str] = []

    def ask(name: str) -> None:
        with budget.slot():
            order.append(name)

    with budget.slot():  # the next start is a second away
        pass
    reader = threading.Thread(target=ask, args=("reader",), name="reader")
    reader.start()
    assert reader_sleeping.wait(timeout=20)
    worker = threading.Thread(target=ask, args=("worker",), name="worker")
    worker.start()
    deadline = time.monotonic() + 20
    while not order and budget.waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # the worker started, or waits in line
    now[0] = max(now[0], 1.0)
    reader_wakes.set()
    reader.join(timeout=20)
    worker.join(timeout=20)
    assert order == ["reader", "worker"]

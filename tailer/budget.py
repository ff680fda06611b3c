"""The process-wide request budget: concurrency, an optional rate cap, and 429 slow-down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_requester: ContextVar[Hashable | None] = ContextVar("qc_tail_requester", default=None)


@contextmanager
def requests_of(key: Hashable) -> Iterator[None]:
    """The requests made in the block (and in the read-ahead it starts) are ``key``'s."""
    token = _requester.set(key)
    try:
        yield
    finally:
        _requester.reset(token)


class RequestBudget:
    """Shared by every deployment, so many followers cannot overrun the API together.

    Concurrency follows TCP's congestion window: a 429 halves the number of requests allowed
    in flight (and pauses everyone for its Retry-After), each success earns a little back, up
    to ``max_in_flight``. ``per_minute`` (0 = none) spaces request starts evenly.

    Requests made for a key (``requests_of``: a deployment's poll and its read-ahead) hold
    all but one of the places at most: however many of them a server leaves unanswered,
    one place is left to the others' requests.

    Places go to waiting requests in the order they came, the first one with room first: a
    request that waits is never overtaken by one that came later and could wait as well (a
    read-ahead worker freeing its place and asking again at once would otherwise win it
    back, over and over, from a request its reader is waiting for).
    """

    def __init__(
        self,
        max_in_flight: int = 4,
        per_minute: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.window = float(max_in_flight)
        self._spacing = 60.0 / per_minute if per_minute > 0 else 0.0
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._in_flight = 0
        self._held: dict[Hashable, int] = {}  # places held, by key
        self._next_start = 0.0
        self._paused_until = 0.0
        self._queue: list[tuple[object, Hashable | None]] = []  # waiting, in order of coming

    @property
    def waiting(self) -> int:
        """Requests waiting for a place."""
        with self._cond:
            return len(self._queue)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one request's place for the duration of the block."""
        key = _requester.get()
        self._acquire(key)
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                if key is not None:
                    self._held[key] -= 1
                    if not self._held[key]:
                        del self._held[key]
                self._cond.notify_all()

    def _acquire(self, key: Hashable | None) -> None:
        """Wait for a place (see ``_first_with_room``), then for the start time the rate cap
        or a 429's pause sets, keeping the turn meanwhile: a request that came later waits
        behind it, not beside it."""
        turn = (object(), key)
        with self._cond:
            self._queue.append(turn)
        try:
            while True:
                with self._cond:
                    while not self._first_with_room(turn):
                        self._cond.wait()
                    now = self._clock()
                    start = max(now, self._next_start, self._paused_until)
                    if start <= now:
                        self._in_flight += 1
                        if key is not None:
                            self._held[key] = self._held.get(key, 0) + 1
                        self._next_start = now + self._spacing
                        return
                self._sleep(start - now)
        finally:
            with self._cond:
                self._queue.remove(turn)
                self._cond.notify_all()  # the next in line may have room too

    def _first_with_room(self, turn: tuple[object, Hashable | None]) -> bool:
        for waiting in self._queue:
            if self._room(waiting[1]):
                return waiting is turn
        return False

    def _room(self, key: Hashable | None) -> bool:
        places = max(1, int(self.window))
        if self._in_flight >= places:
            return False
        return key is None or self._held.get(key, 0) < max(1, places - 1)

    def succeeded(self) -> None:
        with self._cond:
            self.window = min(float(self.max_in_flight), self.window + 1.0 / self.window)
            self._cond.notify_all()

    def throttled(self, retry_after: float | None) -> None:
        """A 429: halve the window, and hold every request back for ``retry_after``."""
        with self._cond:
            self.window = max(1.0, self.window / 2)
            if retry_after:
                self._paused_until = max(self._paused_until, self._clock() + retry_after)

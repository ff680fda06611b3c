"""Whole-request deadlines: a socket still busy at its request's deadline is shut down.

A socket timeout bounds each ``recv``, not a request: a server that trickles a byte every few
seconds never trips it. So each exchange registers its deadline, the connection pool tells it
which connection it lent to the exchange (``lend``, in the requesting thread), and one watcher
thread shuts that connection's socket down if the deadline passes first. The blocked read then
ends at once, and the exchange reports ``expired`` (a body read to the close could otherwise
pass for whole).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_current = threading.local()  # the exchange the calling thread is running


class Exchange:
    """One request in flight: its deadline and the connection it was lent, if any yet."""

    __slots__ = ("conn", "deadline", "done", "expired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.conn: Any = None
        self.done = False
        self.expired = False


class Deadlines:
    """The exchanges in flight, and the daemon thread that ends those past their deadline.

    The thread runs only while there is something to watch; it is started again by the next
    exchange.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Exchange]] = []
        self._order = itertools.count()
        self._watcher: threading.Thread | None = None
        self._wake_at = 0.0  # when the watcher wakes next, unless notified

    @contextmanager
    def exchange(self, deadline: float) -> Iterator[Exchange]:
        """Watch the calling thread's next request until the block ends."""
        exchange = Exchange(deadline)
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._order), exchange))
            if self._watcher is None or not self._watcher.is_alive():  # none, or lost in a fork
                self._watcher = threading.Thread(
                    target=self._watch, name="qc-tail-deadlines", daemon=True
                )
                self._watcher.start()
            elif deadline < self._wake_at:
                self._cond.notify()
        _current.exchange = exchange
        try:
            yield exchange
        finally:
            _current.exchange = None
            with self._cond:
                exchange.done, exchange.conn = True, None
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)

    def lend(self, conn: Any) -> None:
        """The pool hands ``conn`` to the calling thread's exchange."""
        exchange = getattr(_current, "exchange", None)
        if exchange is not None:
            with self._cond:
                exchange.conn = conn

    def give_back(self, conn: Any) -> None:
        """``conn`` goes back to the pool: another exchange may use it from now on."""
        exchange = getattr(_current, "exchange", None)
        if exchange is not None and exchange.conn is conn:
            with self._cond:
                exchange.conn = None

    def _watch(self) -> None:
        with self._cond:
            while self._heap:
                deadline, _, exchange = self._heap[0]
                delay = deadline - self._clock()
                if exchange.done:
                    heapq.heappop(self._heap)
                elif delay > 0:
                    self._wake_at = deadline
                    self._cond.wait(delay)
                else:
                    heapq.heappop(self._heap)
                    _expire(exchange)
            self._watcher = None


def _expire(exchange: Exchange) -> None:
    exchange.expired = True
    conn = exchange.conn
    sock = getattr(conn, "sock", None) or getattr(conn, "last_sock", None)
    if sock is not None:
        # The plain socket's shutdown, also under TLS: it ends a read blocked in another thread
        # without touching the TLS object that thread is using. OSError: already closed.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

"""Polls in hand: followers polled side by side, so that a slow one holds back no other."""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any

from tailer.prefetch import Prefetcher
from tailer.shutdown import Shutdown

Result = Callable[[], Any]
"""A poll's outcome, asked for: its value, or the exception it ended with, raised again."""
Then = Callable[[Result], None]


class Polls:
    """Runs each follower's poll (or begin) on a small pool of threads, at most ``size`` at
    once, in the order they were started; with a size of one, in the calling thread, there
    and then.

    The outcome of a pooled poll goes back to the thread that started it, which alone
    changes the schedule: ``collect`` hands each one to the ``then`` given with it. A key (a
    follower) has at most one poll in hand, so its batches still come in order.

    A pooled poll runs in a copy of its starter's context (the worker it shows life for)
    and as a worker of ``shutdown``: its critical sections (a write, a cursor's save) end
    before a stop does, and none begins after one. The threads are daemons: a request in
    hand when the process ends is abandoned, and nothing was delivered from it.
    """

    def __init__(self, size: int, shutdown: Shutdown) -> None:
        self.size = max(1, size)
        self.shutdown = shutdown
        self._pool = Prefetcher(self.size) if self.size > 1 else None
        self._busy: set[Hashable] = set()
        self._ended: queue.SimpleQueue[tuple[Hashable, Then, Future[Any]]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._watching = False

    @property
    def in_flight(self) -> int:
        return len(self._busy)

    def busy(self, key: Hashable) -> bool:
        return key in self._busy

    def start(self, key: Hashable, call: Callable[[], Any], then: Then) -> None:
        """Run ``call`` for ``key``; ``then`` gets its outcome (at once, without a pool)."""
        if self._pool is None:
            then(call)
            return
        self._watch_stop()
        self._busy.add(key)
        future = self._pool.submit(functools.partial(self._as_worker, call))  # in our context

        def ended(done: Future[Any]) -> None:
            self._ended.put((key, then, done))
            self._wake.set()

        future.add_done_callback(ended)

    def collect(self) -> int:
        """Hand every poll ended since the last call to its ``then``; how many there were."""
        count = 0
        while True:
            try:
                key, then, future = self._ended.get_nowait()
            except queue.Empty:
                return count
            self._busy.discard(key)
            count += 1
            then(future.result)

    def wait(self, seconds: float) -> None:
        """Until a poll ends, a stop is requested, or ``seconds`` pass."""
        if self._wake.wait(max(0.0, seconds)):
            self._wake.clear()

    def _as_worker(self, call: Callable[[], Any]) -> Any:
        with self.shutdown.worker():
            return call()

    def _watch_stop(self) -> None:
        """A stop wakes ``wait`` too (once a pool is in use)."""
        if self._watching:
            return
        self._watching = True

        def watch() -> None:
            self.shutdown.event.wait()
            self._wake.set()

        threading.Thread(target=watch, name="qc-tail-stop-watch", daemon=True).start()

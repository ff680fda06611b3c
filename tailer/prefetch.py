"""Windows requested ahead of need, so a catch-up keeps several requests in flight."""

from __future__ import annotations

import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

T = TypeVar("T")


class Prefetcher:
    """A few daemon threads running submitted calls; results come back as Futures.

    Daemon threads, unlike ThreadPoolExecutor's, never hold up the process's exit: a stop
    request abandons whatever is in flight (nothing was delivered from it yet). A call runs
    in a copy of its submitter's context (whose requests it makes, see ``requests_of``).
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._jobs: queue.SimpleQueue[tuple[Future[object], Callable[[], object]]] = (
            queue.SimpleQueue()
        )
        self._started = 0
        self._lock = threading.Lock()

    def submit(self, call: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        in_context = functools.partial(contextvars.copy_context().run, call)
        self._jobs.put((future, in_context))  # type: ignore[arg-type]
        with self._lock:
            if self._started < self.workers:
                self._started += 1
                threading.Thread(target=self._work, name="qc-tail-prefetch", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            future, call = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the reader, which decides
                future.set_exception(exc)

"""Workers: each output pipeline polled on its own thread, so that no output waits on another."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from tailer import logs
from tailer.scheduler import Scheduler, status
from tailer.shutdown import Shutdown, Stopping

log = logs.get_logger(__name__)

TICK = 1.0
"""Seconds between the main thread's looks at the workers, at most."""


@dataclass(slots=True)
class _Worker:
    scheduler: Scheduler
    beat: float = field(default_factory=time.monotonic)  # its last sign of life
    stalled: bool = False  # said so (once)


class Workers:
    """One scheduler per pipeline, each run by a daemon thread; the main thread keeps the
    signals, watches the workers, and ends the run.

    A worker shows life at each turn of its loop, at each group it delivers, and during any
    wait (between polls, between retries, waiting out an outage): ``alive`` is whether every
    worker did within ``stall`` seconds, so that one stuck in a request or a push longer
    than that stops systemd's watchdog pings. A worker polling several followers at once
    shows life while any of its polls does: only when all of them are stuck is it stalled.

    A stop (a signal in the main thread, or a worker that failed) lets the critical sections
    in hand end (the write to files, a cursor's save) and begins no other; the threads are
    then left to end with the process: what they do then (a request, a push a stop cuts
    short) saved nothing, so nothing is lost or doubled. A worker's failure ends the run with
    that error.
    """

    def __init__(
        self,
        schedulers: Sequence[Scheduler],
        shutdown: Shutdown,
        *,
        stall: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.schedulers = list(schedulers)
        self.shutdown = shutdown
        self.stall = stall
        self._clock = clock
        self._workers = [_Worker(scheduler, beat=clock()) for scheduler in self.schedulers]
        # The worker a thread runs for: a context variable, so that the threads its
        # scheduler polls on (which copy its context) show life for it too.
        self._mine: ContextVar[_Worker | None] = ContextVar("qc_tail_worker", default=None)
        self._failure: BaseException | None = None

    @property
    def healthy_once(self) -> bool:
        """Some worker's poll or discovery has succeeded."""
        return any(scheduler.healthy_once for scheduler in self.schedulers)

    def status(self) -> str:
        return status(self.schedulers)

    def run(self, on_tick: Callable[[], None] | None = None) -> None:
        """Start the workers, then call ``on_tick`` in this (the main) thread every ``TICK``
        seconds, or every half ``stall``, until a stop; re-raise a worker's failure."""
        every = TICK if self.stall is None else min(TICK, self.stall / 2)
        with self.shutdown.beating(self.beat, every):  # a worker's waits are signs of life
            try:
                for worker in self._workers:
                    thread = threading.Thread(target=self._work, args=(worker,), daemon=True)
                    thread.start()
                while not self.shutdown.requested:
                    self.shutdown.wait(every)
                    if on_tick is not None:
                        on_tick()
            finally:
                self.shutdown.settle()
        if self._failure is not None:
            raise self._failure

    def beat(self) -> None:
        """A sign of life from the calling thread, if it is a worker."""
        worker = self._mine.get()
        if worker is not None:
            worker.beat = self._clock()

    def stalled(self, limit: float) -> str | None:
        """Why the run is not making progress (a worker showed no life within ``limit``
        seconds, or one failed), or None while it is: ``alive``'s rule, said in a line."""
        if self._failure is not None:
            return f"a worker failed: {self._failure}"
        now = self._clock()
        for worker in self._workers:
            quiet = now - worker.beat
            if quiet >= limit:
                return (
                    f"the worker of {self._names(worker)} has shown no progress for "
                    f"{quiet:.0f} s (limit {limit:g} s)"
                )
        return None

    def alive(self) -> bool:
        """Whether every worker showed life within ``stall`` seconds (always, without one)."""
        if self.stall is None:
            return True
        now = self._clock()
        every = True
        for worker in self._workers:
            quiet = now - worker.beat
            if quiet < self.stall:
                if worker.stalled:
                    log.info("worker_progressing", outputs=self._names(worker))
                worker.stalled = False
                continue
            every = False
            if not worker.stalled:
                worker.stalled = True
                log.warning(
                    "worker_stalled",
                    outputs=self._names(worker),
                    seconds=round(quiet, 1),
                    hint="stuck in one request or push: the watchdog pings stop until it "
                    "moves again, and systemd restarts qc-tail if it does not",
                )
        return every

    def _work(self, worker: _Worker) -> None:
        self._mine.set(worker)
        try:
            with self.shutdown.worker():
                worker.scheduler.run(on_idle=self.beat, on_progress=self.beat)
        except Stopping:
            pass
        except BaseException as exc:  # the run ends with it, in the main thread
            if self._failure is None:
                self._failure = exc
            self.shutdown.event.set()  # the other workers stop, and the main thread wakes

    @staticmethod
    def _names(worker: _Worker) -> str:
        return ", ".join(pipeline.name for pipeline in worker.scheduler.pipelines)

"""Signals turned into a clean stop: finish the write in hand, save cursors, then leave."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


class Interrupted(BaseException):
    """Raised in the main thread to leave a blocking wait when a stop signal arrives
    (SIGTERM, SIGINT, and SIGHUP for every command but ``run``).

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class Stopping(BaseException):
    """Raised in a worker thread that would begin a critical section after a stop: a write
    not yet begun is not in hand, so it is not begun (see ``Shutdown.worker``)."""


class Shutdown:
    """The stop flag, and the signal handlers that set it.

    Outside a critical section a signal interrupts at once (a request or a wait in progress
    is abandoned: nothing was delivered, so nothing is lost). Inside one (writing lines,
    saving a cursor) it is deferred to the section's end.

    Signals reach the main thread only. A worker thread (``worker``) learns of a stop from
    ``event`` instead; the main thread, once stopping, waits in ``settle`` for the critical
    sections workers have in hand, and no worker begins another.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._local = threading.local()  # this thread's depth of critical sections, and role
        self._busy = 0  # worker threads inside a critical section
        self._settled = threading.Condition()
        self._on_hangup: list[Callable[[], None]] = []
        self._previous: dict[int, Any] = {}
        self._heartbeat: tuple[Callable[[], None], float | None] | None = None  # see beating

    @property
    def requested(self) -> bool:
        return self.event.is_set() or self.signum is not None

    def install(self, *, reopen_on_hangup: bool = False) -> None:
        """Take SIGTERM, SIGINT and SIGHUP (main thread only); ``uninstall`` gives them back.

        SIGHUP stops, like a closed terminal stops ``tail -f`` (unless it was ignored when we
        started: ``nohup`` keeps that); with ``reopen_on_hangup`` (the daemon) it runs the
        ``on_hangup`` callbacks instead: reopen output files (logrotate).
        """
        for signum, handler in _handlers(self, reopen_on_hangup):
            hangup_ignored = signal.getsignal(signum) is signal.SIG_IGN
            if signum == signal.SIGHUP and hangup_ignored and not reopen_on_hangup:
                continue
            self._previous[signum] = signal.signal(signum, handler)

    def uninstall(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_hangup(self, callback: Callable[[], None]) -> None:
        self._on_hangup.append(callback)

    def request(self, signum: int = signal.SIGTERM) -> None:
        self.signum = signum
        self.event.set()

    @contextmanager
    def beating(self, heartbeat: Callable[[], None], every: float | None) -> Iterator[None]:
        """While inside, every wait calls ``heartbeat`` (systemd's watchdog) at least every
        ``every`` seconds (None: once per wait): a deliberate wait is not a hang. Only a stuck
        request or a stuck loop (which never reach a wait) let the pings stop."""
        self._heartbeat = (heartbeat, every)
        try:
            yield
        finally:
            self._heartbeat = None

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if a stop was requested (see ``beating``)."""
        deadline = time.monotonic() + max(0.0, seconds)
        beat, every = self._heartbeat or (None, None)
        while True:
            if beat is not None:
                beat()
            left = deadline - time.monotonic()
            step = left if every is None else min(left, every)
            if self.event.wait(max(0.0, step)) or left <= step:
                return self.event.is_set()

    def sleep(self, seconds: float) -> None:
        """``wait`` for code that takes a plain sleep function (retries, the request budget)."""
        self.wait(seconds)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """What a stop must not cut short. In the main thread a signal waits for its end;
        a worker thread begins none once a stop is requested (``Stopping``)."""
        depth = self._depth()
        worker = getattr(self._local, "worker", False)
        if worker and depth == 0:
            with self._settled:
                if self.requested:
                    raise Stopping
                self._busy += 1
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            if worker and depth == 0:
                with self._settled:
                    self._busy -= 1
                    self._settled.notify_all()
        if not worker and depth == 0 and self.signum is not None:
            self.event.set()  # here, not in the handler (see _handle)
            raise Interrupted(self.signum)

    @contextmanager
    def worker(self) -> Iterator[None]:
        """Run the block as a worker thread: its critical sections are waited for by
        ``settle``, and none begins after a stop."""
        self._local.worker = True
        try:
            yield
        finally:
            self._local.worker = False

    def settle(self) -> None:
        """Set the stop, then wait until no worker is inside a critical section (the main
        thread's own end of a stop; a second signal meanwhile is only noted)."""
        depth = self._depth()
        self._local.depth = depth + 1
        try:
            self.event.set()
            with self._settled:
                while self._busy:
                    self._settled.wait()
        finally:
            self._local.depth = depth

    def _depth(self) -> int:
        depth: int = getattr(self._local, "depth", 0)
        return depth

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """A stop signal. It runs in the main thread between two bytecodes of whatever that
        thread was doing, perhaps inside ``event.wait()`` holding the event's lock: setting
        the event here can deadlock (the process would never exit). So the handler only
        notes the signal; the event is set where the stop is acted upon (a critical
        section's end), or not at all when Interrupted ends the process at once."""
        self.signum = signum
        if self._depth() == 0:
            raise Interrupted(signum)

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        for callback in self._on_hangup:
            callback()


def _handlers(
    shutdown: Shutdown, reopen_on_hangup: bool
) -> list[tuple[int, Callable[[int, FrameType | None], None]]]:
    return [
        (signal.SIGTERM, shutdown._handle),
        (signal.SIGINT, shutdown._handle),
        (signal.SIGHUP, shutdown._hangup if reopen_on_hangup else shutdown._handle),
    ]

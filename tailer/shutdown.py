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


class Shutdown:
    """The stop flag, and the signal handlers that set it.

    Outside a critical section a signal interrupts at once (a request or a wait in progress
    is abandoned: nothing was delivered, so nothing is lost). Inside one (writing lines,
    saving a cursor) it is deferred to the section's end.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None
        self._critical = 0
        self._on_hangup: list[Callable[[], None]] = []
        self.hangups = 0
        self._previous: dict[int, Any] = {}
        self.heartbeat: Callable[[], None] | None = None
        self.heartbeat_every: float | None = None

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

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if a stop was requested.

        While sleeping, ``heartbeat`` (systemd's watchdog) is called at least every
        ``heartbeat_every`` seconds: a deliberate wait is not a hang. Only a stuck request or
        a stuck loop (which never reach a wait) let the pings stop.
        """
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            if self.heartbeat is not None:
                self.heartbeat()
            left = deadline - time.monotonic()
            step = left if self.heartbeat_every is None else min(left, self.heartbeat_every)
            if self.event.wait(max(0.0, step)) or left <= step:
                return self.event.is_set()

    def sleep(self, seconds: float) -> None:
        """``wait`` for code that takes a plain sleep function (retries, the request budget)."""
        self.wait(seconds)

    @contextmanager
    def critical(self) -> Iterator[None]:
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._critical == 0 and self.signum is not None:
            self.event.set()  # here, not in the handler (see _handle)
            raise Interrupted(self.signum)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """A stop signal. It runs in the main thread between two bytecodes of whatever that
        thread was doing, perhaps inside ``event.wait()`` holding the event's lock: setting
        the event here deadlocked (seen as a ``demo`` that never exited). So the handler only
        notes the signal; the event is set where the stop is acted upon (a critical
        section's end), or not at all when Interrupted ends the process at once."""
        self.signum = signum
        if self._critical == 0:
            raise Interrupted(signum)

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        self.hangups += 1
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

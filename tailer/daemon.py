"""Living as a service: systemd's notify protocol and watchdog, or a detached daemon."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TextIO

from tailer import logs
from tailer.directories import unwritable
from tailer.lockfile import LockFile

log = logs.get_logger(__name__)


class Notifier:
    """sd_notify over ``$NOTIFY_SOCKET`` (a path, or ``@abstract``); a no-op without it.

    ``watchdog()`` is called from the poll loop each time round, and pings at half of
    ``$WATCHDOG_USEC``: a loop stuck anywhere stops the pings, and systemd restarts us.
    """

    def __init__(
        self,
        env: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_interval: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6
        self._last_ping = -float("inf")
        self._status: str | None = None
        self.is_ready = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *fields: str) -> bool:
        if not self._address:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self._address)
                sock.sendall(message)
        except OSError as exc:
            log.debug("notify_failed", error=str(exc))
            return False
        return True

    def ready(self, status: str) -> None:
        if not self.is_ready:
            self.is_ready = True
            self._status = status
            self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        if status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        if self.watchdog_interval is None:
            return
        now = self._clock()
        if now - self._last_ping >= self.watchdog_interval:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def reloading(self) -> None:
        monotonic = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic}")
        self.send("READY=1")  # reopening files is immediate (done at the next write)

    def stopping(self) -> None:
        self.send("STOPPING=1")


def pid_file(path: Path) -> LockFile:
    """A pidfile that is also a lock: held while we live, removed when we end."""
    return LockFile(
        path,
        mode=0o644,
        key="--pidfile",
        refusal=lambda holder: f"{path}: held by a running qc-tail (pid {holder})",
        remove=True,
    )


@contextlib.contextmanager
def detached(
    working_directory: Path, pidfile: Path, log_file: Path, keep: list[int]
) -> Iterator[None]:
    """Become a classic daemon (python-daemon): detached, umask 027, cwd the state dir.

    SIGTERM/SIGINT/SIGHUP keep the handlers already installed, so signals behave as in the
    foreground. Events go to ``log_file``. ``keep`` lists file descriptors to hold open
    (the state lock).
    """
    import daemon  # python-daemon; imported here, only hosts without systemd need it

    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        stream: TextIO = open(log_file, "a", buffering=1)  # noqa: SIM115 - lives with the daemon
    except OSError as exc:
        raise unwritable(log_file, "--log-file", exc) from None
    context = daemon.DaemonContext(
        working_directory=str(working_directory),
        umask=0o027,
        detach_process=True,
        files_preserve=[*keep, stream.fileno()],
        signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None},
        stdout=None,
        stderr=stream,
    )
    with context:
        pid = pid_file(pidfile)
        pid.acquire()
        try:
            yield
        finally:
            pid.release()

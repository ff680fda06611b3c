"""A file that is also a lock: flock held for the life of the process, our pid inside."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

from tailer.directories import unwritable
from tailer.errors import LockedError


class LockFile:
    """``acquire`` takes an exclusive flock without waiting, or raises LockedError with
    ``refusal(holder_pid)`` as its message; the pid written inside is only for that message,
    so failing to write it is no reason to stop. ``remove`` unlinks the file on release (a
    pidfile); a lock that others may be waiting to open stays (the state lock)."""

    def __init__(
        self,
        path: Path,
        *,
        mode: int,
        key: str,
        refusal: Callable[[str], str],
        remove: bool = False,
    ) -> None:
        self.path = path
        self._mode = mode
        self._key = key
        self._refusal = refusal
        self._remove = remove
        self._fd: int | None = None

    def acquire(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, self._mode)
        except OSError as exc:
            raise unwritable(self.path, self._key, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise LockedError(self._refusal(holder)) from None
        self._fd = fd
        self.stamp()

    def stamp(self) -> None:
        """Write our pid (again after detaching: the pid changed)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def fds(self) -> list[int]:
        return [self._fd] if self._fd is not None else []

    def release(self) -> None:
        if self._fd is None:
            return
        if self._remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None

"""The directories qc-tail writes to: made at start, probed by ``check``, faults made plain."""

from __future__ import annotations

import errno
import os
import resource
import tempfile
from pathlib import Path

from tailer.errors import CannotCreateError, QcTailError, WriteFailedError

_PASSING = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})  # may pass: room, a disk back
_WHY = {
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "a read-only file system",
    errno.ENOENT: "the file system does not let it be made (No such file or directory)",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.ELOOP: "a symbolic link loop",
}


def prepare(path: Path, mode: int, key: str) -> None:
    """Make ``path`` (and its parents, each ``mode``) unless it exists, and make sure files
    can be created in it; else an error naming ``key`` (the config key that chose it)."""
    try:
        _make(path, mode)
        _probe(path)
    except OSError as exc:
        raise unwritable(path, key, exc) from None


def probe(path: Path) -> str:
    """What ``check`` reports about a directory, without making it: "writable", "missing,
    can be made (under X)", or why not; raises the error ``prepare`` would raise."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        _probe(existing)
    except OSError as exc:
        raise unwritable(path, "", exc) from None
    return "writable" if existing == path else f"missing; can be made (under {existing})"


def unwritable(path: Path, key: str, exc: OSError) -> QcTailError:
    """The error for an OSError met making or writing ``path``: 74 when it may pass (a full
    disk), else 73 (no permission, a path under a file: a restart will not fix it)."""
    why = _WHY.get(exc.errno or 0, exc.strerror or str(exc))
    where = f"{key} = {path}" if key and not key.startswith("-") else f"{key} {path}".strip()
    if exc.errno in _PASSING:
        return WriteFailedError(f"{where}: cannot write there: {why}")
    hint = f"choose another {key}, or " if key else ""
    return CannotCreateError(
        f"{where}: cannot create or write there: {why}; "
        f"{hint}make it a directory this user may write"
    )


def open_files_limit() -> int:
    """How many descriptors this process may hold (its soft RLIMIT_NOFILE; ``ulimit -n``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def too_many_open_files(exc: OSError) -> str | None:
    """What to do about EMFILE/ENFILE (the process's or the system's descriptors all in
    use); None for any other error."""
    if exc.errno == errno.EMFILE:
        return (
            f"too many open files: this process may hold {open_files_limit()}; raise the "
            "limit (LimitNOFILE= in the systemd unit, or ulimit -n before starting qc-tail)"
        )
    if exc.errno == errno.ENFILE:
        return "too many open files in the whole system: raise fs.file-max (sysctl)"
    return None


def _make(path: Path, mode: int) -> None:
    """``mkdir -p`` where each directory made gets ``mode`` whatever the umask."""
    missing = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current == current.parent:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            if not directory.is_dir():  # a file where a directory should be
                raise NotADirectoryError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory)
                ) from None
            continue
        os.chmod(directory, mode)


def _probe(directory: Path) -> None:
    """Create (and drop) an unnamed file in ``directory``: proof a file can be made there."""
    with tempfile.TemporaryFile(dir=directory):
        pass

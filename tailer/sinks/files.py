"""Local files, one per deployment: one line per row, appended, fsynced before any cursor moves."""

from __future__ import annotations

import contextlib
import errno
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import count, groupby
from operator import itemgetter
from pathlib import Path

from tailer import logs
from tailer.cursor import Cursor
from tailer.directories import open_files_limit, too_many_open_files
from tailer.errors import OutputError
from tailer.records import escaped_lines, texts_of
from tailer.sinks import Record
from tailer.sinks.emptied import Emptied
from tailer.sinks.recovery import FileMark, last_line_print, unproven
from tailer.store import safe_name

_DEPLOYMENT = itemgetter(0, 1)  # (project_id, deploy_id), of any record alike

log = logs.get_logger(__name__)

Write = Callable[[int, memoryview], int]
"""``os.write``: one write to a descriptor, returning how many bytes it took."""

FILE_MODE = 0o640
DIR_MODE = 0o750
_COPY_CHUNK = 1 << 20
MAX_OPEN = 256
"""Output files kept open at most (fewer under a low open-files limit): a daemon follows
thousands of deployments, most of them quiet for hours."""


@dataclass(slots=True)
class _Open:
    fd: int
    committed: int  # the length when last flushed: what a cursor may refer to
    inode: int
    start: int = 0  # the length before the first write since the last flush
    last: str | None = None  # fingerprint of the last line flushed (see ``FileMark.last``)
    pending: str | None = None  # ... of the last line written since


class FileSink:
    """``<directory>/<project_id>/<deploy_id>.log``, opened with O_APPEND and O_NOFOLLOW.

    A failed write or fsync (a full disk, an I/O error) cuts every file touched since the
    last flush back to its flushed length and raises OutputError, so the cursor stays put and
    the same lines are written again later, once. After a crash, ``recover`` cuts a file back
    to the length saved with its cursor, once its content proves it is that file. ``reopen``
    (SIGHUP) takes effect at the next write, for logrotate's ``create`` + ``postrotate``.

    At most ``max_open`` files stay open (by default ``MAX_OPEN``, or a quarter of the
    process's open-files limit if that is less): beyond, the least recently written one
    not written since the last flush is closed, and reopened at its next write. A file
    found replaced then (another inode) is taken as a SIGHUP would take it: a new file.
    """

    def __init__(
        self, directory: Path, *, write: Write = os.write, max_open: int | None = None
    ) -> None:
        self.directory = directory
        self._write = write
        self.max_open = max_open or max(1, min(MAX_OPEN, open_files_limit() // 4))
        self._open: OrderedDict[tuple[int, str], _Open] = OrderedDict()  # least recent first
        self._touched: set[tuple[int, str]] = set()
        self._closed: dict[tuple[int, str], FileMark] = {}
        self._emptied: dict[tuple[int, str], Emptied] = {}  # found so at the restart
        # Where matching stood before the writes since the last flush: a roll-back puts it
        # back, or the same lines, delivered again, would be matched past what they are.
        self._matching: dict[tuple[int, str], tuple[Emptied, int, str | None]] = {}
        self._proven: dict[tuple[int, str], FileMark] = {}  # by content at the restart
        self._reopen = False
        self._short_of_files = False  # said so; until a file opens again

    def path(self, project_id: int, deploy_id: str) -> Path:
        return self.directory / str(project_id) / f"{safe_name(deploy_id)}.log"

    def recover(self, cursors: Iterable[Cursor]) -> None:
        """Cut files back to what their saved cursors account for (a crash left more).

        Only a file whose content proves it is the one its cursor counts is cut (see
        ``unproven``). One that cannot be proven (emptied and written again, replaced,
        shortened, edited) is never cut: the lines read again are compared with it (see
        ``Emptied``), and from the first difference on its bytes are moved to
        ``<deploy_id>.log.unverified``; a finished deployment's is left as it is (nothing
        more will be written to it).
        """
        for cursor in cursors:
            saved = FileMark.of(cursor)
            if saved.size is None:
                continue
            key = (cursor.project_id, cursor.deploy_id)
            try:
                fd = self._open_fd(key, create=False, read=True)
            except FileNotFoundError:  # deleted, or rotated away: delivery starts it afresh
                if saved.size and not cursor.done:
                    log.info("output_missing", path=str(self.path(*key)), hint="a new one starts")
                continue
            except OSError as exc:  # a symlink planted where our file should be, say
                raise _output_error(self.path(*key), exc) from None
            try:
                kept = self._recover(fd, cursor, saved)
            except OSError as exc:
                os.close(fd)
                raise _output_error(self.path(*key), exc) from None
            if not kept:
                os.close(fd)

    def _recover(self, fd: int, cursor: Cursor, saved: FileMark) -> bool:
        """Cut the file back, or keep it to match (then its descriptor too: True)."""
        path = self.path(cursor.project_id, cursor.deploy_id)
        stat = os.fstat(fd)
        keep = saved.size or 0
        if stat.st_size == 0 or (cursor.done and stat.st_size <= keep):
            return False  # nothing to cut (an emptied file holds nothing to protect either)
        reason = unproven(fd, stat, cursor, saved)
        if reason is None:
            if stat.st_size > keep:
                os.ftruncate(fd, keep)
                log.info("output_cut_back", path=str(path), bytes=stat.st_size - keep)
            # Proven by content, whatever its inode (a copy): its last line is the cursor's,
            # for the cursors saved while it stays as it is now.
            key = (cursor.project_id, cursor.deploy_id)
            self._proven[key] = FileMark(keep, stat.st_ino, saved.last)
        elif cursor.done:
            log.info("output_unverified", path=str(path), reason=reason, hint="left as it is")
        else:  # emptied in place and written before a crash, or replaced: content tells
            os.fsync(fd)  # what it holds is matched as delivered: on disk, as if flushed
            emptied = Emptied(stat.st_size, saved, fd, stat.st_ino)
            self._emptied[(cursor.project_id, cursor.deploy_id)] = emptied
            log.warning(
                "output_unproven",
                path=str(path),
                reason=reason,
                hint=f"{path} is not as its cursor left it: emptied in place (by hand, or "
                "logrotate's copytruncate) and written before a crash, or replaced. It is kept "
                "and compared with the lines read again: those it holds are not written twice; "
                f"from the first difference on, what it holds is moved to {path.name}.unverified.",
            )
            return True
        return False

    def _unmatched(self, key: tuple[int, str], handle: _Open, data: bytes) -> bytes:
        """What of ``data`` a file emptied in place (see ``Emptied``) does not hold yet.

        Where it holds something else, that rest of it is moved to ``<name>.unverified``
        (copied, then cut off: the file keeps the lines matched) and ``data`` is written.
        """
        emptied = self._emptied.get(key)
        if emptied is None:
            return data
        self._matching.setdefault(key, (emptied, emptied.matched, emptied.last))
        taken, differs = emptied.match(data)
        if differs and os.fstat(emptied.fd).st_size > emptied.matched:
            aside = self._split_off(self.path(*key), emptied.fd, emptied.matched)
            os.ftruncate(emptied.fd, emptied.matched)
            log.warning(
                "output_set_aside",
                path=str(self.path(*key)),
                moved_to=str(aside),
                reason="what it holds is not the lines read again",
                hint=f"its last {emptied.size - emptied.matched} bytes were moved to {aside}, "
                f"and new lines follow in {self.path(*key)}. Compare the two: lines written "
                "just before a crash can be in both, and lines missing from a shortened or "
                "replaced file are not fetched again.",
            )
        if differs:  # nothing of it is left past the lines matched
            emptied.matched = emptied.size
        if emptied.settled:  # (its descriptor is closed once the lines are flushed)
            del self._emptied[key]
            size = os.fstat(handle.fd).st_size  # a new file, if that one was rotated away
            handle.committed, handle.start = size, size
            same = handle.inode == emptied.inode and size == emptied.matched
            handle.last = emptied.last if same else None
        return data[taken:]

    def _split_off(self, path: Path, fd: int, at: int) -> Path:
        """Copy the bytes of ``fd`` past ``at`` to a new ``<name>.unverified`` file (synced),
        then cut them off ``fd``."""
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            name = _free_name(path.name, dir_fd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out = os.open(name, flags, FILE_MODE, dir_fd=dir_fd)
            try:
                while chunk := os.pread(fd, _COPY_CHUNK, at):
                    _write_all(out, chunk, os.write)
                    at += len(chunk)
                os.fsync(out)
            finally:
                os.close(out)
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return path.with_name(name)

    def write(self, records: Sequence[Record]) -> None:
        if self._reopen:
            self._close_all()
            self._reopen = False
        chunks: dict[tuple[int, str], list[str]] = {}
        for key, run in groupby(records, _DEPLOYMENT):  # consecutive records of one deployment
            texts = texts_of(run)
            if texts:
                chunks.setdefault(key, []).extend(texts)
        for key, texts in chunks.items():
            # A lone surrogate (an emoji cut in half upstream) is kept as a visible escape.
            data = escaped_lines(texts).encode("utf-8", "backslashreplace")
            try:
                handle = self._handle(key)
                size = os.fstat(handle.fd).st_size  # less than committed if emptied under us
                if size < handle.committed and key not in self._touched:
                    _emptied_under_us(self.path(*key), handle.committed - size)
                handle.start = min(handle.start, size) if key in self._touched else size
                rest = self._unmatched(key, handle, data)
                if not rest:
                    continue
                self._touched.add(key)
                _write_all(handle.fd, rest, self._write)
                handle.pending = last_line_print(data)  # the rest may complete a torn line
            except OSError as exc:
                self._roll_back()
                raise self._error(self.path(*key), exc) from None

    def flush(self) -> None:
        for key in sorted(self._touched):
            handle = self._open[key]
            try:
                os.fsync(handle.fd)
            except OSError as exc:
                self._roll_back()
                raise _output_error(self.path(*key), exc) from None
        for key in self._touched:
            handle = self._open[key]
            handle.committed = os.fstat(handle.fd).st_size
            handle.last, handle.pending = handle.pending, None
        self._touched.clear()
        for key, (emptied, _, _) in self._matching.items():
            if key not in self._emptied:
                emptied.close()  # settled, and what follows its lines is flushed
        self._matching.clear()

    def stamp(self, cursor: Cursor) -> Cursor:
        """The cursor, with the flushed length and inode of its deployment's file.

        A finished deployment's file is closed and forgotten here: a daemon that sees a
        redeploy a day would otherwise hold one more descriptor (or entry) each day, for good.
        """
        key = (cursor.project_id, cursor.deploy_id)
        size, inode, last = self.position(*key)
        if cursor.done and key not in self._touched:  # and nothing kept of it either
            self._closed.pop(key, None)
            self._proven.pop(key, None)
            handle = self._open.pop(key, None)
            if handle is not None:
                with contextlib.suppress(OSError):
                    os.close(handle.fd)
        if size is None:
            return cursor
        saved = FileMark.of(cursor)
        if last is None and (size, inode) == saved[:2]:
            last = saved.last  # not written by this process: as the cursor knew it
        return FileMark(size, inode, last).on(cursor)

    def position(self, project_id: int, deploy_id: str) -> FileMark:
        """The flushed length, inode and last line's fingerprint of a deployment's file, for
        its cursor (kept after a SIGHUP closed the file: the cursor still describes it)."""
        handle = self._open.get((project_id, deploy_id))
        emptied = self._emptied.get((project_id, deploy_id))
        if emptied is not None:
            return emptied.position()
        if handle is not None:
            return FileMark(handle.committed, handle.inode, handle.last)
        if (project_id, deploy_id) in self._closed:
            return self._closed[(project_id, deploy_id)]
        try:  # not opened by this process: as it stands (nothing at all: length 0)
            stat = os.stat(self.path(project_id, deploy_id), follow_symlinks=False)
        except FileNotFoundError:
            return FileMark(0, None, None)
        proven = self._proven.get((project_id, deploy_id))
        same = proven is not None and proven[:2] == (stat.st_size, stat.st_ino)
        return FileMark(stat.st_size, stat.st_ino, proven.last if proven and same else None)

    def reopen(self) -> None:
        """Close files at the next write, so renamed ones are let go (SIGHUP)."""
        self._reopen = True

    def close(self) -> None:
        self._close_all()
        for key, (emptied, _, _) in self._matching.items():
            if key not in self._emptied:  # settled: not closed yet
                emptied.close()
        self._matching.clear()
        for emptied in self._emptied.values():
            emptied.close()
        self._emptied.clear()

    def _handle(self, key: tuple[int, str]) -> _Open:
        handle = self._open.get(key)
        if handle is not None:
            self._open.move_to_end(key)
            return handle
        self._make_room(self.max_open - 1)
        try:
            fd = self._open_fd(key, create=True)
        except OSError as exc:  # the process's limit, reached with sockets and all
            if too_many_open_files(exc) is None or not self._make_room(0):
                raise
            fd = self._open_fd(key, create=True)
        self._short_of_files = False
        try:
            stat = os.fstat(fd)
            if stat.st_mode & 0o777 != FILE_MODE and stat.st_size == 0:
                os.fchmod(fd, FILE_MODE)
        except OSError:
            os.close(fd)
            raise
        handle = _Open(fd, stat.st_size, stat.st_ino)
        proven = self._proven.pop(key, None)
        known = self._closed.pop(key, None) or proven  # is it as it was left, or proven?
        if known is not None and known[:2] == (stat.st_size, stat.st_ino):
            handle.last = known[2]
        self._open[key] = handle
        return handle

    def _make_room(self, keep: int) -> bool:
        """Close files not written since the last flush, least recently written first,
        until at most ``keep`` are open; whether any was closed."""
        idle = [key for key in self._open if key not in self._touched]
        closing = idle[: max(0, len(self._open) - keep)]
        for key in closing:
            self._close(key)
        return bool(closing)

    def _close(self, key: tuple[int, str]) -> None:
        """Close a file, keeping what its cursor says of it."""
        handle = self._open.pop(key)
        self._closed[key] = FileMark(handle.committed, handle.inode, handle.last)
        with contextlib.suppress(OSError):
            os.close(handle.fd)

    def _open_fd(self, key: tuple[int, str], *, create: bool, read: bool = False) -> int:
        """Open a deployment's file for appending (and reading), refusing symlinks."""
        project_dir = self.directory / str(key[0])
        if create:
            for directory in (self.directory, project_dir):
                if not directory.is_dir():
                    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
                    os.chmod(directory, DIR_MODE)
        dir_fd = os.open(project_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            flags = (os.O_RDWR if read else os.O_WRONLY) | os.O_APPEND | os.O_NOFOLLOW
            flags |= os.O_CLOEXEC
            flags |= os.O_CREAT if create else 0
            return os.open(self.path(*key).name, flags, FILE_MODE, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    def _roll_back(self) -> None:
        """Cut touched files back to what they held before these writes, never beyond: one
        emptied meanwhile (``: > file``, logrotate's ``copytruncate``) is not stretched back
        to its old length with zeros."""
        for key in self._touched:
            handle = self._open[key]
            keep = min(handle.committed, handle.start)
            with contextlib.suppress(OSError):
                if os.fstat(handle.fd).st_size > keep:
                    os.ftruncate(handle.fd, keep)
                handle.committed = keep
            handle.pending = None
        self._touched.clear()
        for key, (emptied, matched, last) in self._matching.items():
            emptied.matched, emptied.last = matched, last
            self._emptied[key] = emptied
        self._matching.clear()

    def _error(self, path: Path, exc: OSError) -> OutputError:
        """``_output_error``, and for a lack of descriptors an error event (once until a
        file opens again) that says which limit to raise."""
        limit = too_many_open_files(exc)
        if limit is not None and not self._short_of_files:
            self._short_of_files = True
            log.error(
                "too_many_open_files",
                path=str(path),
                files_open=len(self._open),
                limit=open_files_limit(),
                hint=limit,
            )
        return _output_error(path, exc)

    def _close_all(self) -> None:
        for key in list(self._open):
            self._close(key)
        self._touched.clear()


def _write_all(fd: int, data: bytes, write: Write) -> None:
    view = memoryview(data)
    while view:
        view = view[write(fd, view) :]


def _emptied_under_us(path: Path, lost: int) -> None:
    log.warning(
        "output_emptied",
        path=str(path),
        bytes=lost,
        hint=f"{path} was emptied or cut while qc-tail wrote to it (by hand, or logrotate's "
        "copytruncate): new lines follow what is left. Rotate with logrotate's create and a "
        "SIGHUP instead.",
    )


def _free_name(name: str, dir_fd: int) -> str:
    """``<name>.unverified`` (``.2``, ``.3``, ... if taken) in the directory ``dir_fd``."""
    names = (f"{name}.unverified{f'.{n}' if n > 1 else ''}" for n in count(1))
    return next(name for name in names if not _exists(name, dir_fd))


def _exists(name: str, dir_fd: int) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _output_error(path: Path, exc: OSError) -> OutputError:
    limit = too_many_open_files(exc)
    if limit is not None:
        return OutputError(limit, output=str(path))
    hint = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "I/O error"
    return OutputError(f"{hint} ({exc.strerror or exc})", output=str(path))

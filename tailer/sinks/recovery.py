"""What a restart may do to an output file: is it, by its content, the one its cursor counts?"""

from __future__ import annotations

import hashlib
import os
from typing import NamedTuple, TypeGuard

from tailer.cursor import Cursor, MarkError
from tailer.records import fingerprint

_FIRST_READ = 4096
_LOOKBACK = 1 << 20
"""How far back from the saved length the last delivered line is looked for."""
_PIECES = 16
"""A line whose text holds newlines spans several lines of the file: up to this many."""
FILE = "file"
"""The name of a file output's mark in a cursor."""


class FileMark(NamedTuple):
    """What a file output saves with each cursor: the file's length once the cursor's lines
    were flushed into it, its inode, and the fingerprint of its last line as its bytes were
    written (escaped: one line of the file). Each None if unknown."""

    size: int | None = None
    inode: int | None = None
    last: str | None = None

    @classmethod
    def of(cls, cursor: Cursor) -> FileMark:
        """The mark ``cursor`` holds; MarkError if it is not one a file output makes."""
        mark = cursor.mark(FILE)
        size, inode, last = mark.get("size"), mark.get("inode"), mark.get("last")
        if not (_count(size) and _count(inode) and (last is None or isinstance(last, str))):
            raise MarkError(cursor, FILE)
        return cls(size, inode, last)

    def on(self, cursor: Cursor) -> Cursor:
        """``cursor`` with this mark."""
        return cursor.marked(FILE, self._asdict())


def _count(value: object) -> TypeGuard[int | None]:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def unproven(fd: int, stat: os.stat_result, cursor: Cursor, saved: FileMark) -> str | None:
    """None if the open file ``fd`` provably holds what ``cursor`` counts at its start (so
    whatever lies past ``saved.size`` was written after the cursor was saved, and may be
    cut); else why it cannot be proven.

    The proof is the content: the file reaches the saved length, and the last line delivered
    ends exactly there. The inode counts only where no line was delivered to recognise (a
    copy of a file keeps its bytes, not its inode; a new file may get an old one's inode).
    """
    size = saved.size or 0
    if stat.st_size < size:
        return f"it is shorter ({stat.st_size} bytes) than the {size} bytes delivered to it"
    if size == 0:  # nothing was in it: all it holds came later (ours, from a crash)
        if saved.inode in (None, stat.st_ino):
            return None
        return "it was replaced since the cursor was saved, when it was empty"
    if saved.last is not None:  # the last line as written: escaped, one line of the file
        if not _ends_with_line(fd, size, saved.last, written=True):
            return f"the last line written does not end at byte {size}, where its cursor says"
        return _unless_copied_whole(fd, stat, cursor, saved)
    if not cursor.tail:  # the last record delivered was a gap, or the lines were not ours
        if stat.st_ino == saved.inode:
            return None
        return "it was replaced (a new inode) and no delivered line is known to check it by"
    if _ends_with_line(fd, size, cursor.tail[-1]):  # a mark saved before ``last`` was kept
        return None
    return f"the last line delivered does not end at byte {size}, where its cursor says"


def _unless_copied_whole(
    fd: int, stat: os.stat_result, cursor: Cursor, saved: FileMark
) -> str | None:
    """For a file with another inode than its cursor's (a copy, or a new file after a
    rotation): None if the lines before its last one are the lines delivered before it too
    (each one line of the file, as written since ``FileMark.last`` is kept).
    A last line alone may be a repeated one (a heartbeat) that another file's lines put at
    the same byte by chance."""
    if stat.st_ino == saved.inode or _ends_with_tail(fd, saved.size or 0, cursor):
        return None
    return "it was replaced (a new inode), and the lines before its last are not those delivered"


def _ends_with_tail(fd: int, end: int, cursor: Cursor) -> bool:
    """Whether the whole lines before the last one ending at ``end`` are those delivered
    before it (``cursor.tail``, as many of them as the file holds)."""
    wanted = len(cursor.tail) - 1
    if wanted <= 0:
        return True
    start = max(0, end - _LOOKBACK)
    lines = os.pread(fd, end - start, start).split(b"\n")[:-2]  # the last: proven already
    if start > 0:
        lines = lines[1:]  # maybe cut
    held = lines[-wanted:]
    try:
        prints = [fingerprint(line.decode("utf-8")) for line in held]
    except UnicodeDecodeError:
        return False
    return prints == list(cursor.tail[-1 - len(held) : -1])


def last_line_print(data: bytes) -> str:
    """The fingerprint of the last line of ``data`` (newline-terminated lines, as written)."""
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    return hashlib.sha256(data[start:-1]).hexdigest()[:16]


def _ends_with_line(fd: int, end: int, print_: str, *, written: bool = False) -> bool:
    """Whether the bytes before ``end`` end with a whole line whose fingerprint is ``print_``
    (``written``: of its bytes as written, see ``last_line_print``; else of its text).

    Read back in growing chunks: a file's last line is usually short, and a restart checks
    every file it has a cursor for.
    """
    size = _FIRST_READ
    while True:
        start = max(0, end - size)
        data = os.pread(fd, end - start, start)
        if written:
            found = _written_last(data, start == 0, print_)
        else:
            found = _last_line_is(data, start == 0, print_)
        if found is not None or start == 0 or size >= _LOOKBACK:
            return bool(found)
        size *= 8


def _written_last(data: bytes, whole: bool, print_: str) -> bool | None:
    """Whether ``data`` ends with the written line fingerprinted ``print_``; None when more
    bytes are needed to tell (the line may begin before them)."""
    if not data.endswith(b"\n"):
        return False
    if data.rfind(b"\n", 0, len(data) - 1) < 0 and not whole:
        return None
    return last_line_print(data) == print_


def _last_line_is(data: bytes, whole: bool, print_: str) -> bool | None:
    """Whether ``data`` (the file's bytes up to the saved length; ``whole``: from its start)
    ends with the line fingerprinted ``print_``; None when more bytes are needed to tell.

    Lines are written as their UTF-8 text plus a newline; the last one, two, ... of the
    file's lines are tried as one text, in case that text held newlines itself. (A line with
    a lone surrogate is written escaped and is not recognised: its file is set aside.)
    """
    if not data.endswith(b"\n"):
        return False
    body = data[:-1]
    cut = len(body)
    for _ in range(_PIECES):
        cut = body.rfind(b"\n", 0, cut)
        if cut < 0 and not whole:
            return None
        try:
            text = body[cut + 1 :].decode("utf-8")
        except UnicodeDecodeError:  # not what qc-tail writes, in this piece or any longer
            return False
        if fingerprint(text) == print_:
            return True
        if cut < 0:
            return False
    return False

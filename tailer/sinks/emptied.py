"""A file emptied in place since its cursor was saved: lines read again are matched against it."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from tailer.sinks.recovery import FileMark, last_line_print


@dataclass(slots=True)
class Emptied:
    """An output file that does not end where its cursor says: emptied under qc-tail
    (``: > file``, logrotate's ``copytruncate``), then written after the last cursor save,
    before a crash; or replaced. If emptied, none of its bytes is counted by the cursor, so
    its lines are read again: those it already holds are matched, not written twice, and
    the file is cut nowhere until they disagree.
    """

    size: int  # its length at the restart: the bytes still to be matched
    saved: FileMark  # what its cursor said of it
    fd: int  # the file found at the restart, read and cut through this descriptor: renamed
    inode: int  # away by a rotation before its lines are read again, it still holds them
    matched: int = 0  # bytes matched so far, from its start
    last: str | None = None  # fingerprint of the last line matched

    def position(self) -> FileMark:
        """What a cursor saved now says of the file: until a line is matched, what it said
        (a restart then finds the file as this one did), then the lines matched."""
        if self.matched == 0:
            return self.saved
        return FileMark(self.matched, self.inode, self.last)

    def match(self, data: bytes) -> tuple[int, bool]:
        """How many leading bytes of ``data`` (lines delivered next) the file holds already,
        from where matching stands, and whether it holds something else after them: then
        matching is over, and the whole lines that agree are kept."""
        wanted = min(len(data), self.size - self.matched)
        held = os.pread(self.fd, wanted, self.matched)
        differs = len(held) < wanted or not data.startswith(held)  # else a torn line completes
        same = _common_lines(held, data) if differs else len(held)
        self.matched += same
        if same and held[:same].endswith(b"\n"):
            self.last = last_line_print(held[:same])
        return same, differs

    @property
    def settled(self) -> bool:
        """Whether every byte it held at the restart has been matched."""
        return self.matched >= self.size

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def _common_lines(held: bytes, data: bytes) -> int:
    """The length of the whole lines ``held`` and ``data`` both begin with."""
    same = 0
    for mine, theirs in zip(held.split(b"\n")[:-1], data.split(b"\n")[:-1], strict=False):
        if mine != theirs:
            break
        same += len(mine) + 1
    return same

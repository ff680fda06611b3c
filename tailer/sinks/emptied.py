"""A file emptied in place since its cursor was saved: lines read again are matched against it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from tailer.sinks.recovery import last_line_print

Position = tuple[int | None, int | None, str | None]
"""A file's flushed length, inode and last line's fingerprint (each None if unknown)."""


@dataclass(slots=True)
class Emptied:
    """An output file that does not end where its cursor says: emptied under qc-tail
    (``: > file``, logrotate's ``copytruncate``), then written after the last cursor save,
    before a crash; or replaced. If emptied, none of its bytes is counted by the cursor, so
    its lines are read again: those it already holds are matched, not written twice, and
    the file is cut nowhere until they disagree.
    """

    size: int  # its length at the restart: the bytes still to be matched
    saved: Position  # what its cursor said of it
    matched: int = 0  # bytes matched so far, from its start
    last: str | None = None  # fingerprint of the last line matched

    def position(self, inode: int) -> Position:
        """What a cursor saved now says of the file: until a line is matched, what it said
        (a restart then finds the file as this one did), then the lines matched."""
        if self.matched == 0:
            return self.saved
        return self.matched, inode, self.last

    def match(self, fd: int, data: bytes) -> int | None:
        """How many leading bytes of ``data`` (whole lines, delivered next) the file holds
        already, from where matching stands; None if it holds something else there."""
        wanted = min(len(data), self.size - self.matched)
        held = os.pread(fd, wanted, self.matched)
        if len(held) < wanted or not data.startswith(held):  # not as it was at the restart
            return None
        self.matched += len(held)
        if held.endswith(b"\n"):
            self.last = last_line_print(held)
        return len(held)

    @property
    def settled(self) -> bool:
        """Whether every byte it held at the restart has been matched."""
        return self.matched >= self.size

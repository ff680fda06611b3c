"""A progress line on a terminal's stderr during a long catch-up (lines, rate, what is left)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

from tailer.cursor import Cursor
from tailer.records import Gap, LineRun
from tailer.sinks import Record

AFTER = 1.0
"""Seconds of catching up before the line appears: a short read shows none."""
EVERY = 0.5
"""Seconds between updates of the line."""
_CLEAR = "\r\x1b[K"


class ProgressSink:
    """Counts the lines delivered and redraws one line on ``stream`` (a terminal) while
    ``left()`` says lines remain to read; it wipes the line once caught up, and on close.

    It goes last in its pipeline: lines are counted once the other outputs have them.
    """

    def __init__(
        self,
        stream: TextIO,
        left: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self._left = left
        self._clock = clock
        self._began: float | None = None
        self._shown_at: float | None = None
        self.lines = 0

    def write(self, records: Sequence[Record]) -> None:
        now = self._clock()
        if self._began is None:
            self._began = now
        self.lines += sum(len(r.texts) if isinstance(r, LineRun) else 0 for r in records)
        self.lines += sum(1 for r in records if not isinstance(r, LineRun | Gap))
        left = self._left()
        if left <= 0:
            self._wipe()
            return
        if now - self._began < AFTER or (
            self._shown_at is not None and now - self._shown_at < EVERY
        ):
            return
        rate = self.lines / max(now - self._began, 1e-9)
        self.stream.write(f"{_CLEAR}qc-tail: {self.lines:,} lines, {rate:,.0f}/s, {left:,} left")
        self.stream.flush()
        self._shown_at = now

    def _wipe(self) -> None:
        if self._shown_at is not None:
            self.stream.write(_CLEAR)
            self.stream.flush()
            self._shown_at = None

    def flush(self) -> None:
        """Nothing to make durable: the line is only shown."""

    def close(self) -> None:
        self._wipe()

    def stamp(self, cursor: Cursor) -> Cursor:
        return cursor

    def recover(self, cursors: Iterable[Cursor]) -> None:
        """Nothing to undo."""

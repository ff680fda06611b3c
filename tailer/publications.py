"""Whether a publication landed between two windows of a catch-up, told by how the log ends.

Where retention trims as many rows as a publication adds, a publication leaves the numbers as
they were and moves every row down; a window read after it can then show, at the place of the
last lines delivered, copies of them further on. The reader checks a window for that by
reading the rows below it afresh: one more request a window. The check is needed only where a
publication landed between the window and the one before it, which reads of the log's end
tell: if the log ended alike in a read answered before either window was asked and in one
asked after both were answered, nothing was published in between. Two publications look
like none: more of the same on a log that repeats at its end (``realign.log_end`` declines
to watch one: every window is then checked), and one whose rows repeat the watched rows
exactly (the reader still compares the rows below a quiet window, as the answer before it
showed them). One such read, made once a group of windows read ahead is answered, covers
the whole group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, wait
from typing import NamedTuple

from tailer.api import LogWindow
from tailer.cursor import Cursor
from tailer.realign import End

STEP = 0.1
"""Seconds between signs of life (``pause(0)``) while a group of windows is awaited."""

PATIENCE = 1.0
"""Seconds with no window of the group answered after which it is not awaited any more: the
read-ahead is held up (another deployment's server, say), and the end is read without it."""


class EndRead(NamedTuple):
    """How the log ended (None: not watched, see ``realign.log_end``), read between ``asked``
    and ``answered`` on the API client's clock (that of ``LogWindow``)."""

    asked: float
    answered: float
    end: End | None


ReadEnd = Callable[[End | None], EndRead]
"""A fresh read of how the log ends, in the rows of the end given (None: found first)."""


class Publications:
    """The reads of the log's end made during one catch-up, and the answer the last lines
    delivered came from. ``pause(0)`` is called while windows are awaited (the API client's
    sleep: a sign of life)."""

    def __init__(self, read_end: ReadEnd, pause: Callable[[float], None]) -> None:
        self._read_end = read_end
        self._pause = pause
        self._ends: list[EndRead] = []
        self._last: tuple[Cursor, LogWindow] | None = None
        self._held_up = False  # a group was not answered in time: groups are not awaited

    @property
    def watched(self) -> bool:
        """Whether the log's end was read in this catch-up, and can be watched."""
        return bool(self._ends) and self._ends[0].end is not None

    def watch(self) -> bool:
        """Read how the log ends now, if not read yet in this catch-up; whether it can be
        watched (windows asked from now on can then be told quiet)."""
        if not self._ends:
            self._ends.append(self._read_end(None))
        return self.watched

    def delivered(self, window: LogWindow, cursor: Cursor) -> None:
        """Lines of ``window`` were delivered, up to ``cursor``: the next window is compared
        with them."""
        self._last = (cursor, window)

    def quiet(
        self,
        cursor: Cursor,
        window: LogWindow,
        later: Callable[[], Sequence[Future[LogWindow]]],
    ) -> bool:
        """Whether nothing was published between the answer the lines up to ``cursor`` came
        from and ``window``. If no read of the end was asked after both were answered, one is
        made now, once the windows read ahead (``later``) are answered: that one read covers
        them too."""
        last = self._last
        if last is None or last[0] is not cursor or not self._ends:
            return False
        asked = min(last[1].asked, window.asked)
        answered = max(last[1].answered, window.answered)
        if math.isinf(answered):  # one was not read from the API: when is unknown
            return False
        before = [read for read in self._ends if read.answered < asked]
        if not before or before[-1].end is None:
            return False
        after = next((read for read in self._ends if read.asked > answered), None)
        if after is None:
            self._await(later())
            after = self._read_end(self._ends[0].end)
            self._ends.append(after)
        return after.asked > answered and after.end == before[-1].end

    def reset(self) -> None:
        """The catch-up is over (or its reads undone): the next one starts afresh."""
        self._ends.clear()
        self._last = None
        self._held_up = False

    def _await(self, group: Sequence[Future[LogWindow]]) -> None:
        """Wait for ``group`` while its answers keep coming (one wait a step, not one an
        answer: each wait watches every window of the group still pending)."""
        pending = set(group)
        idle = 0  # steps with no answer
        while pending and not self._held_up:
            left = len(pending)
            pending = wait(pending, timeout=STEP).not_done
            self._pause(0.0)
            idle = 0 if len(pending) < left else idle + 1
            self._held_up = idle * STEP >= PATIENCE - STEP / 2

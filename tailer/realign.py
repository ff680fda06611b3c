"""Where a deployment's last lines delivered are now: answers confirmed, then searched."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tailer import logs
from tailer.api import LogWindow
from tailer.cursor import TAIL_LINES, period
from tailer.errors import ProtocolError
from tailer.records import fingerprint

log = logs.get_logger(__name__)

Fetch = Callable[[int, int], LogWindow]
"""A fresh read of rows ``[start, stop)``: never a prefetched or cached answer."""

SETTLE_READS = 3


class Changed(Exception):
    """The log a search went through changed under it: a trim meanwhile, or a lagging answer."""


def settle(
    fetch: Fetch, start: int, stop: int, answer: LogWindow, checked: int, who: str
) -> LogWindow:
    """The answer for ``[start, stop)`` once a later one confirms it: one answer alone, maybe
    from a lagging replica or a window prefetched before the latest, proves nothing.

    A later answer confirms an earlier one if it shows the same offset and the same first
    ``checked`` rows (those compared with the lines delivered), and no fewer rows in all (new
    ones may have been published meanwhile); it is the one returned.
    """
    for _ in range(SETTLE_READS):
        again = fetch(start, stop)
        same = again.deployment_offset == answer.deployment_offset
        if same and again.length >= answer.length and again.logs[:checked] == answer.logs[:checked]:
            return again
        answer = again
    raise ProtocolError(f"{who}: answers keep disagreeing; retrying later")


def least_shift(offset: int, length: int, answer: LogWindow) -> int:
    """How many of a deployment's rows the API removed at least, by the numbers, since it
    answered ``offset`` and ``length``.

    Retention removes the oldest rows first, older deployments' before this one's: while some
    of theirs remain (an offset above 0), none of ours went, and the offset's fall is the whole
    shift. Once the offset is 0, the length's fall beyond the older deployments' rows is ours
    (more, if rows were published meanwhile: a lower bound).
    """
    if answer.deployment_offset > 0:
        return 0
    return max(0, length - answer.length - offset)


def search(
    fetch: Fetch,
    prints: Sequence[str],
    expected: int,
    end: int | None,
    answer: LogWindow,
    window: int,
) -> tuple[int | None, int]:
    """The project-wide index where ``prints`` now ends, searching back from ``expected``, and
    how many of them matched (all, but at the deployment's first line fewer suffice).

    Trimming only moves lines to lower numbers, so the search runs downwards, window by window
    (overlapping by the fingerprints' length), until the deployment's first line. Every window
    must show the log as ``answer`` did, or with rows added at its end (else ``Changed``): a
    trim meanwhile, or a lagging replica, is no ground to act on.
    """
    offset, length = answer.deployment_offset, answer.length
    hi = min(expected, length - 1, length if end is None else end - 1)
    overlap = len(prints) - 1
    while hi >= offset:
        lo = max(offset, hi - window + 1)
        rows = fetch(lo, hi + 1)
        if len(rows.logs) < hi + 1 - lo and rows.length > hi:
            raise ProtocolError("/live/logs/read: the answer lacks rows it says exist")
        if rows.deployment_offset != offset or rows.length < length:  # new rows move nothing
            log.info("log_changed", hint="searched again")
            raise Changed
        found = [fingerprint(row) for row in rows.logs]
        for i in range(len(found) - 1, -1, -1):
            if found[i] == prints[-1] and ends_with(found[: i + 1], prints, lo == offset):
                return lo + i, min(i + 1, len(prints))
        if lo == offset:
            return None, 0
        hi = min(hi - 1, lo + overlap - 1) if overlap else lo - 1
    return None, 0


def repeats(fetch: Fetch, prints: Sequence[str], lo: int, end: int) -> bool:
    """Whether ``prints`` also occur, in rows ``[lo, end)``, ending below ``end - 1``: lines
    that, moved down by a trim, would read the same at the place of those."""
    if end - lo <= len(prints):
        return False
    return occurs(prints, [fingerprint(row) for row in fetch(lo, end - 1).logs])


def occurs(needle: Sequence[str], rows: Sequence[str]) -> bool:
    """Whether ``needle`` occurs in ``rows`` as that many rows in a row."""
    n = len(needle)
    if n == 0:
        return True
    wanted, rows = list(needle), list(rows)
    at = -1
    try:
        while True:
            at = rows.index(wanted[0], at + 1, len(rows) - n + 1)
            if rows[at : at + n] == wanted:
                return True
    except ValueError:  # no further row starts it
        return False


End = tuple[int, int, int, tuple[str, ...]]
"""How the log ends: the first row read, the deployment's offset, the project's length, and
the rows' prints."""


END_SEARCH = 4
"""Windows read back, at most, for where the repetition of the log's last rows begins."""


def log_end(fetch: Fetch, length: int, rows: int, who: str, known: End | None = None) -> End | None:
    """How the log ends now, in rows that a publication moves (those of ``known``, if given):
    the last ``rows`` rows as of ``length``, or, where those repeat within themselves, rows
    from the one where that repetition begins. A publication changes them or the length,
    even one that retention balances by trimming as many rows: every row moves down. None
    where no row breaks the repetition a few windows back: a publication of more of the same,
    balanced, could leave the log as it was. An answer unlike ``known`` is confirmed by a
    second (one may be a lagging replica's: one that says the log moved when it did not would
    cost a check; one that says it stayed cannot be told from the truth). Without ``known``,
    the first answer is taken as it is: one from a lagging replica only makes a later answer
    differ."""
    if known is None:
        span = _watched(fetch, length, rows)
        if span is None:
            return None
        start, stop, read = span
        if read is not None:
            return _end(start, read)
    else:
        start, stop = known[0], known[0] + max(1, len(known[3]))
    answer = fetch(start, stop)
    if _end(start, answer) != known:
        answer = settle(fetch, start, stop, answer, stop - start, who)
    return _end(start, answer)


def _watched(fetch: Fetch, length: int, rows: int) -> tuple[int, int, LogWindow | None] | None:
    """The rows ``log_end`` watches: the last ``rows`` (with the answer that showed them), or
    ``rows`` from the row that breaks their repetition (None if none does within
    ``END_SEARCH`` windows back)."""
    stop = max(1, length)
    lo = max(0, stop - rows)
    last = fetch(lo, stop)
    prints = [fingerprint(row) for row in last.logs]
    q = period(prints) if len(prints) > 1 else None
    if q is None:
        return lo, stop, last
    for _ in range(END_SEARCH):
        below = max(0, lo - rows)
        more = [fingerprint(row) for row in fetch(below, lo).logs] if below < lo else []
        if not more or len(more) != lo - below:  # the first row, or rows no longer served
            return None
        prints = more + prints
        for j in range(len(more) - 1, -1, -1):
            if prints[j] != prints[j + q]:
                return below + j, min(below + j + rows, stop), None
        lo = below
    return None


def _end(start: int, answer: LogWindow) -> End | None:
    prints = tuple(fingerprint(row) for row in answer.logs)
    if len(prints) > 1 and period(prints) is not None:
        return None
    return start, answer.deployment_offset, answer.length, prints


def sure(prints: Sequence[str], matched: int) -> bool:
    """Whether a match of ``matched`` of ``prints`` (from Cursor.signature: lines that do not
    repeat within themselves, or a run with its anchor) places them: at least two lines, all
    of them, or, cut short at the deployment's first line, lines that do not repeat each other
    (one line alone may be one repeated anywhere)."""
    if matched < 2:
        return False
    return matched >= len(prints) or (
        len(prints) <= TAIL_LINES and period(prints[-matched:]) is None
    )


def ends_with(found: Sequence[str], prints: Sequence[str], at_start: bool) -> bool:
    """Whether ``found`` ends with ``prints``; a shorter run suffices at the deployment's start."""
    n = min(len(found), len(prints))
    if n < len(prints) and not at_start:
        return False
    return tuple(found[-n:]) == tuple(prints[-n:])

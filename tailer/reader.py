"""One deployment's lines, read in windows below 250, checked and realigned against trimming."""

from __future__ import annotations

import functools
from concurrent.futures import Future
from dataclasses import dataclass, replace

import structlog

from tailer.api import LogWindow, QcApi
from tailer.cursor import TAIL_LINES, Cursor
from tailer.errors import AnswerTooLargeError, ProtocolError, WindowTooLargeError
from tailer.prefetch import Prefetcher
from tailer.records import Gap, Line, LineRun, fingerprint

log = structlog.get_logger(__name__)

MAX_WINDOW = 249
"""``endLine - startLine`` must stay below 250; never send more."""

_OFFSET_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Batch:
    """Lines (or a gap) ready for the outputs, and the cursor to save once they have them."""

    run: LineRun | None
    gap: Gap | None
    cursor: Cursor
    before: Cursor | None = None  # the cursor these lines follow

    @property
    def count(self) -> int:
        """How many lines it holds."""
        return len(self.run.texts) if self.run is not None else 0

    @property
    def lines(self) -> tuple[Line, ...]:
        return self.run.lines() if self.run is not None else ()

    @property
    def record(self) -> LineRun | Gap | None:
        """What the outputs are given."""
        return self.run if self.run is not None else self.gap


class DeploymentReader:
    """Reads a deployment's next lines from its committed cursor, one window per call.

    Every read starts a few lines early, at the last lines delivered, and checks them against
    the cursor's fingerprints: if the API trimmed old lines since, the numbers have shifted and
    the reader searches back for those lines by content (``realign``); if they are gone, the
    lines in between are reported as a gap, never skipped in silence nor read twice. (A shift
    is invisible only when the lines around the cursor repeat with a period that divides it:
    content is all the API offers to tell them apart.)
    """

    def __init__(
        self,
        api: QcApi,
        cursor: Cursor,
        name: str,
        *,
        offset: int = 0,
        window: int = MAX_WINDOW,
        prefetcher: Prefetcher | None = None,
    ) -> None:
        self.api = api
        self.cursor = cursor  # committed: the outputs have everything before it
        self.ahead = cursor  # read: where the next read starts (batches not yet committed)
        self.name = name
        self.offset = offset  # the deploymentOffset the API last reported
        self.length = 0  # the project's row count the API last reported
        self.window = min(window, MAX_WINDOW)
        self.prefetcher = prefetcher
        self._ahead: dict[tuple[int, int], Future[LogWindow]] = {}
        self._narrowed: tuple[int, int] | None = None  # (line to pass, window to restore)
        self.caught_up = False  # the last read found nothing new up to the deployment's end

    @property
    def deploy_id(self) -> str:
        return self.cursor.deploy_id

    @property
    def project_id(self) -> int:
        return self.cursor.project_id

    def probe(self) -> LogWindow:
        """Learn the deployment's offset and the project's length (one small request)."""
        window = self._fetch(self.length, self.length + 1)
        self.offset, self.length = window.deployment_offset, window.length
        return window

    def visible(self, end: int | None = None) -> int:
        """How many of the deployment's lines the API serves now (after a probe or read)."""
        return max(0, (self.length if end is None else end) - self.offset)

    def place(self, cursor: Cursor) -> None:
        """Start from ``cursor`` (a start position chosen before anything was read)."""
        self.cursor = self.ahead = cursor

    def rewind(self) -> None:
        """Forget reads that were never committed: the next read starts at the cursor."""
        self.ahead = self.cursor
        self._forget_prefetched()

    def read(self, end: int | None = None, *, limit: int | None = None) -> Batch | None:
        """The next window of new lines, a gap, or None when caught up.

        ``end`` is the project-wide line where this deployment stops (its successor's offset),
        or None while it is the project's latest deployment. ``limit`` bounds the read without
        saying the deployment ends there (rows past it may belong to a newer deployment).
        """
        bound = min((b for b in (end, limit) if b is not None), default=None)
        for _ in range(_OFFSET_RETRIES):
            cursor = self.ahead
            first = cursor.line_number(self.offset)
            checked = min(len(cursor.tail), cursor.position - cursor.trimmed, self.window - 1)
            start = first - max(0, checked)
            stop = start + self.window
            if bound is not None:
                if first >= bound and checked <= 0:
                    self.caught_up = limit is None  # a limit is not the deployment's end
                    return None
                stop = min(stop, max(bound, start + 1))
            window = self._fetch_unless_too_large(start, stop)
            if window is None:  # over the size cap
                return self._after_too_large(start, stop, end, limit)
            self.length = window.length
            if window.deployment_offset != self.offset:
                log.info(
                    "offset_moved",
                    deploy=self.deploy_id,
                    was=self.offset,
                    now=window.deployment_offset,
                )
                self.offset = window.deployment_offset
                self._forget_prefetched()
                continue
            if len(window.logs) == stop - start and window.length > stop:
                self._prefetch(stop, window.length, bound)
            rows = list(window.logs)
            if checked > 0:
                promised = min(stop, window.length) - start
                if len(rows) < checked and len(rows) < promised:
                    raise ProtocolError(
                        f"{self.deploy_id}: the answer lacks rows its own length promises"
                    )
                if [fingerprint(row) for row in rows[:checked]] != list(cursor.tail[-checked:]):
                    return self._realign(end, limit)
                rows = rows[checked:]
            if bound is not None:
                rows = rows[: max(0, bound - first)]
            if end is not None:  # aligned, and the successor marks the end: the size is known
                self.ahead = replace(cursor, total=cursor.trimmed + end - self.offset)
            self.caught_up = not rows and limit is None
            return self._batch(rows, first) if rows else None
        raise ProtocolError(f"{self.deploy_id}: deploymentOffset keeps moving; retrying later")

    def commit(self, batch: Batch) -> None:
        """The outputs have the batch durably."""
        self.cursor = batch.cursor

    def _batch(self, rows: list[str], first: int) -> Batch:
        cursor = self.ahead
        run = LineRun(
            cursor.project_id,
            cursor.deploy_id,
            self.name,
            first,
            cursor.position,
            tuple(rows),
            cursor.launched,
        )
        self.ahead = cursor.advance(rows)
        return Batch(run, None, self.ahead, cursor)

    def _fetch(self, start: int, stop: int) -> LogWindow:
        """One window (prefetched, if it was foreseen), halving it if the server asks.

        An answer over our own size cap raises AnswerTooLargeError once the window is halved
        (the caller asks again, with the overlap it checks), down to a single line.
        """
        if self._narrowed is not None and start >= self._narrowed[0] + TAIL_LINES:
            self.window, self._narrowed = self._narrowed[1], None  # the large lines are behind
        future = self._ahead.pop((start, stop), None)
        while True:
            try:
                if future is not None:
                    return future.result()
                return self.api.read_logs(self.project_id, self.deploy_id, start, stop)
            except AnswerTooLargeError:
                self._forget_prefetched()
                if stop - start > 1:
                    self._narrow(start, stop)
                raise
            except WindowTooLargeError:
                self._forget_prefetched()
                future = None
                if stop - start <= 2:
                    raise
                self.window = max(2, (stop - start) // 2)
                log.warning("window_shrunk", deploy=self.deploy_id, window=self.window)
                stop = start + self.window
            except BaseException:
                self._forget_prefetched()
                raise

    def _fetch_unless_too_large(self, start: int, stop: int) -> LogWindow | None:
        """``_fetch``, or None when the answer passed the size cap: the window is narrowed, or
        it was the next line alone."""
        try:
            return self._fetch(start, stop)
        except AnswerTooLargeError:
            if stop - start == 1 and start != self.ahead.line_number(self.offset):
                raise  # a line already delivered: it fitted then, so this answer is not sane
            return None

    def _after_too_large(
        self, start: int, stop: int, end: int | None, limit: int | None
    ) -> Batch | None:
        """Read again in the window ``_fetch`` narrowed, or skip the line that alone is over."""
        return self._skip() if stop - start == 1 else self.read(end, limit=limit)

    def _narrow(self, start: int, stop: int) -> None:
        """Halve the window until the lines of ``[start, stop)`` (and the overlap that would
        read them again) are behind the cursor, then restore it."""
        passed, wide = self._narrowed or (stop, self.window)
        self._narrowed = (max(passed, stop), wide)
        self.window = max(1, (stop - start) // 2)
        log.warning(
            "window_shrunk", deploy=self.deploy_id, window=self.window, reason="answer too large"
        )

    def _skip(self) -> Batch:
        """The next line alone is over the answer size cap: reported, passed over as a gap."""
        cursor = self.ahead
        log.warning(
            "line_too_large",
            deploy=self.deploy_id,
            name=self.name,
            line=cursor.line_number(self.offset),
            position=cursor.position,
            hint="this one line is larger than the answer size cap; it is skipped as a gap",
        )
        after = self.ahead = replace(cursor, position=cursor.position + 1, tail=())
        gap = Gap(self.project_id, self.deploy_id, self.name, 1, after.position)
        return Batch(None, gap, after, cursor)

    def _prefetch(self, stop: int, length: int, bound: int | None) -> None:
        """Request the windows that will follow a full one, exactly as ``read`` will compute
        them (a window asked differently would be read again, and this one wasted), up to
        the project's ``length`` or the read's ``bound``.

        Each overlaps its predecessor by the tail that ``read`` checks, so a window fetched
        before a trim moved the lines is caught like any other read.
        """
        if self.prefetcher is None:
            return
        # Four times what may be in flight (the budget caps that): a worker that finishes
        # takes the next window at once, rather than waiting for the reader to consume in
        # order, and reading goes on while the outputs fsync (16 windows by default).
        depth = 4 * int(self.api.budget.window)
        overlap = min(TAIL_LINES, self.window - 1)
        while len(self._ahead) < depth:  # past those already asked for, to keep depth in flight
            start = stop - overlap
            if start + overlap >= (length if bound is None else min(length, bound)):
                return
            nxt = start + self.window
            if bound is not None:
                nxt = min(nxt, max(bound, start + 1))
            if (start, nxt) not in self._ahead:
                read = functools.partial(
                    self.api.read_logs, self.project_id, self.deploy_id, start, nxt
                )
                self._ahead[(start, nxt)] = self.prefetcher.submit(read)
            stop = nxt

    def _forget_prefetched(self) -> None:
        for future in self._ahead.values():
            future.cancel()
        self._ahead.clear()

    def _realign(self, end: int | None, limit: int | None) -> Batch | None:
        """The line before the cursor is not where it was: find it by content, or give a gap."""
        cursor = self.ahead
        expected = cursor.line_number(self.offset) - 1
        found = self._search(cursor.tail, expected, end)
        if found == expected:  # found where it should be, yet the read disagreed: not a trim
            raise ProtocolError(f"{self.deploy_id}: answers disagree with each other")
        if found is not None:
            shift = expected - found
            log.warning("realigned", deploy=self.deploy_id, shift=shift, position=cursor.position)
            self.ahead = replace(cursor, trimmed=cursor.trimmed + shift)
            return self.read(end, limit=limit)
        return self._gap(end)

    def _search(self, tail: tuple[str, ...], expected: int, end: int | None) -> int | None:
        """The project-wide index where ``tail`` now ends, searching back from ``expected``.

        Trimming only moves lines to lower numbers, so the search runs downwards, window by
        window (overlapping by the tail's length), until the deployment's first line.
        """
        hi = min(expected, self.length - 1, self.length if end is None else end - 1)
        overlap = len(tail) - 1
        while hi >= self.offset:
            lo = max(self.offset, hi - self.window + 1)
            window = self._fetch(lo, hi + 1)
            if len(window.logs) < hi + 1 - lo and window.length > hi:
                raise ProtocolError(f"{self.deploy_id}: the answer lacks rows it says exist")
            if window.deployment_offset != self.offset:
                self.offset = window.deployment_offset
                return None if self.offset > hi else self._search(tail, expected, end)
            prints = [fingerprint(row) for row in window.logs]
            for i in range(len(prints) - 1, -1, -1):
                if prints[i] == tail[-1] and _ends_with(prints[: i + 1], tail, lo == self.offset):
                    return lo + i
            if lo == self.offset:
                return None
            hi = min(hi - 1, lo + overlap - 1) if overlap else lo - 1
        return None

    def _gap(self, end: int | None) -> Batch:
        """The last line delivered is gone: what follows it, up to the first line left, is lost."""
        cursor = self.ahead
        lost: int | None = None
        if cursor.total is not None:  # the size known when aligned; late lines may have grown it
            counted = cursor.total - self.visible(end) - cursor.position
            lost = counted if counted > 0 else None
        position = cursor.position + (lost or 0)
        gap = Gap(self.project_id, self.deploy_id, self.name, lost, position)
        after = self.ahead = replace(cursor, position=position, trimmed=position, tail=())
        log.warning(
            "gap",
            deploy=self.deploy_id,
            name=self.name,
            lost=lost if lost is not None else "unknown",
            hint="the API removed lines (retention) before they could be read",
        )
        return Batch(None, gap, after, cursor)


def _ends_with(prints: list[str], tail: tuple[str, ...], at_start: bool) -> bool:
    """Whether ``prints`` ends with ``tail``; a shorter run suffices at the deployment's start."""
    n = min(len(prints), len(tail))
    if n < len(tail) and not at_start:
        return False
    return tuple(prints[-n:]) == tail[-n:]

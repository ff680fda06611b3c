"""One deployment's lines, read in windows below 250, checked and realigned against trimming."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace

from tailer import logs, realign
from tailer.api import LogWindow, QcApi
from tailer.cursor import TAIL_LINES, Cursor
from tailer.errors import AnswerTooLargeError, ProtocolError, WindowTooLargeError
from tailer.export import Exporter, PlacedExport
from tailer.prefetch import Prefetcher
from tailer.publications import EndRead, Publications
from tailer.records import Gap, Line, LineRun, fingerprint

log = logs.get_logger(__name__)

MAX_WINDOW = 249
"""``endLine - startLine`` must stay below 250; never send more."""

_ATTEMPTS = 6
"""Reads in a row that find the log moved (offset, trim) before one gives up until later."""
_CONFIRM_AFTER = 2.0
"""Seconds to wait before reading again what answers said gone: a lagging replica catches up."""
_GROUP = 64
"""Windows read ahead that one read of the log's end covers, where windows are checked for a
publication between them (see ``Publications``): the more, the fewer reads of the end, and
the more windows held while that read is awaited."""
_AGAIN = object()  # read again now
_WAIT = object()  # lines said gone by answers that a later one must confirm: read again later
_LATER = object()  # nothing to read until the caller knows more (at its next poll)
_RECHECK = object()  # the successor's offset is below lines read: ask it again, a little later
RETENTION = 100_000
"""A project's most rows: one that has them loses its oldest at every publication."""
AGED_OUT = 360 * 86400
"""Retention's other limit, lines older than a year: a deployment launched longer ago than
this (a little less, for clocks that disagree) may lose its first lines at any publication."""


class RowsMissingInside(ProtocolError):
    """An answer lacks rows inside its window, not at its front. With line numbers kept
    across retention, a newer deployment's trimmed rows leave such a hole past this one's
    last row: a reader that does not know its deployment ends there must learn where it
    does before anything in the window is taken as its own."""


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


@dataclass(frozen=True, slots=True)
class _Plan:
    """One read: the rows it asks for, and the last lines delivered it compares first."""

    cursor: Cursor
    prints: tuple[str, ...]  # fingerprints of the last lines delivered (see Cursor.signature)
    unique: bool  # whether they can match in one place only
    first: int  # the project-wide number of the next line, if nothing moved
    checked: int  # how many of them the read compares
    start: int
    stop: int
    run: int = 0  # with ``pair``: how many lines before ``first`` the run begins
    pair: tuple[str, str] | None = None  # a long run's anchor and first line, compared apart


class DeploymentReader:
    """Reads a deployment's next lines from its cursor, one window per call.

    Every read starts a few lines early, at the last lines delivered, and checks them against
    the cursor's fingerprints: if the API trimmed old lines since, the numbers have shifted and
    the reader searches back for those lines by content (``realign``); if they are gone, the
    lines in between are reported as a gap, never skipped in silence nor read twice.

    One answer is no evidence: a lagging replica or an older prefetched window shows the log
    as it was. An answer that surprises (the lines delivered last are not where they were, the
    offset moved, or the length fell by more than the rows of older deployments) is read again
    until two in a row agree, and every window of a search must show the same log, before
    anything is realigned; lines said gone by an answer that does not even reach the last line
    delivered wait for a later answer to say so too.

    Where the lines around the cursor repeat (identical lines, or a few over and over), the
    last four read the same a period lower. The cursor then keeps the run's length and the
    line before it (its anchor), compared with the run (a long run: the anchor and the run's
    first line, apart); the numbers say how far the lines moved at least (the length's fall
    beyond the older deployments' share); and where neither can place the cursor, the reader
    resumes at the highest place it can be and reports a gap of unknown size, never guessing.
    Invisible to content and numbers alike: a shift inside a run that reaches back to the
    deployment's first line (or to a gap), or by a multiple of a pattern of more than three
    lines, while as many new lines were published. Where retention may act on the
    deployment (its first lines are gone, the offset fell, the project is at its most rows,
    or the deployment is old enough for its lines to age out) and its last lines read could
    have moved so, new lines after a publication are preceded by a gap of unknown size: a
    possible one, said rather than kept silent. Within a catch-up it is said again when the
    log's last rows show that a publication landed between two windows (one balanced by a
    trim leaves the numbers as they were, not those rows).

    Left unsaid: a trim of a deployment younger than retention's year (or of unknown launch)
    in a project below its most rows (documented retention makes none; were one made inside
    such a run, every answer would read as in a history without it, and a gap said for it
    would be said at every new line of every young run); between two windows of a
    catch-up, a publication of more of the same where the log, from its end back over five
    windows, is one line or a few over and over (no answer shows it where that reaches back
    to the first row served; the reader searches no further back); and, once a possible gap
    was said in a catch-up, a publication between two of its windows whose rows repeat the
    log's last rows exactly (its end then reads as before it).
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
        exporter: Exporter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.clock = clock
        self.exporter = exporter
        self._export: PlacedExport | None = None  # an export placed: windows answered from it
        self._export_declined = False  # tried in this catch-up; windows until caught up
        self._exported: LogWindow | None = None  # the last window answered from the export
        self.cursor = cursor  # handed out: everything before it went to be delivered
        self.ahead = cursor  # read: where the next read starts (batches not yet handed out)
        self.name = name
        self.offset = offset  # the deploymentOffset the API last reported
        self.length = 0  # the project's row count the API last reported
        self.window = min(window, MAX_WINDOW)
        self.prefetcher = prefetcher
        self._published = Publications(self._read_end, api.pause)  # see _doubtful
        # The answer the last lines delivered came from, where it starts, and its export
        self._shown_rows: tuple[Cursor, int, LogWindow, PlacedExport | None] | None = None
        self._prefetched: dict[tuple[int, int], Future[LogWindow]] = {}  # by (start, stop)
        self._narrowed: tuple[int, int] | None = None  # (line to pass, window to restore)
        self._basis: dict[tuple[int, int], tuple[int, int]] = {}  # offset, length when asked
        self._asked_to: tuple[int, int, int, int | None] | None = None  # see _asked_from
        self.caught_up = False  # the last read found nothing new up to the deployment's end
        self._known = False  # offset and length come from an answer
        self._waited = False  # lines said gone await a later answer's confirmation
        self._rechecked = True  # the successor's offset was asked again during this read
        self._probed = True  # this deployment's offset was asked again during this read
        # What the last answer delivered from showed: the cursor after it, whether it reached
        # the log's end, and up to which line it was read. Until a rewind, asking again what
        # it just said would only cost a request.
        self._shown: tuple[Cursor, bool, int] | None = None
        self._unserved = False  # a read found no row served below the length: a gap if again
        self._trims_seen = False  # retention was seen removing rows of the project
        self._doubt_said = False  # a possible gap was reported since the reader caught up
        self._end: realign.End | None = None  # how the log ended when that gap was said
        self._doubted: Cursor | None = None  # the cursor that gap was said before

    @property
    def deploy_id(self) -> str:
        return self.cursor.deploy_id

    @property
    def project_id(self) -> int:
        return self.cursor.project_id

    def probe(self, asked: Future[LogWindow] | None = None) -> LogWindow:
        """Learn the deployment's offset and the project's length (one small request, or
        ``asked``: the answer to ``first_row``, asked before this reader existed)."""
        if asked is not None and not self._known:
            self._prefetched[self._last_row()] = asked
        window = self._fetch(*self._last_row())
        self._accept(window)
        return window

    @staticmethod
    def first_row(api: QcApi, project_id: int, deploy_id: str) -> LogWindow:
        """What the probe of a new reader asks."""
        return api.read_logs(project_id, deploy_id, 0, 1)

    def reprobe(self) -> int:
        """The deployment's offset, asked afresh (no cached or prefetched answer)."""
        self._accept(self._fresh(*self._last_row()))
        return self.offset

    def _last_row(self) -> tuple[int, int]:
        """The last row known to exist (the first, before any answer): a read at or past the
        end may be refused, where the documentation is silent."""
        at = max(0, self.length - 1)
        return at, at + 1

    def visible(self, end: int | None = None) -> int:
        """How many of the deployment's lines the API serves now (after a probe or read)."""
        return max(0, (self.length if end is None else end) - self.offset)

    def place(self, cursor: Cursor) -> None:
        """Start from ``cursor`` (a start position chosen before anything was read)."""
        self.cursor = self.ahead = cursor
        self._shown = None
        self._published.reset()

    def rewind(self) -> None:
        """Forget reads that were never handed out: the next read starts at the cursor (and
        asks the API afresh)."""
        self.ahead = self.cursor
        self._shown = None
        self._forget_prefetched()
        self._published.reset()

    def read(
        self,
        end: int | None = None,
        *,
        limit: int | None = None,
        recheck: Callable[[], int] | None = None,
    ) -> Batch | None:
        """The next window of new lines, a gap, or None when caught up.

        ``end`` is the project-wide line where this deployment stops (its successor's offset),
        or None while it is the project's latest deployment; ``recheck`` asks it again, should
        it fall below lines already read. ``limit`` bounds the read without saying the
        deployment ends there (rows past it may belong to a newer deployment).
        """
        self._rechecked = recheck is None
        self._probed = False
        for attempt in range(_ATTEMPTS):
            bound = min((b for b in (end, limit) if b is not None), default=None)
            plan = self._next_plan(attempt, bound, end)
            if plan is None:
                self.caught_up = limit is None  # a limit is not the deployment's end
                self._export, self._export_declined = None, False
                self._caught_up()
                return None
            self._consider_export(plan, bound)
            self._watch_first(plan, bound)
            basis = self._basis.pop((plan.start, plan.stop), (self.offset, self.length))
            window = self._fetch_unless_too_large(plan.start, plan.stop)
            if window is None:  # over the size cap
                return self._after_too_large(plan.start, plan.stop, end, limit)
            if self._misplaced(window, plan):
                continue
            outcome = self._judge(plan, window, end, basis)
            if isinstance(outcome, tuple):
                plan, window = outcome
                return self._deliver(plan, window, end, bound, limit)
            if isinstance(outcome, Batch):
                return outcome
            if outcome is _LATER:
                self.caught_up = False
                return None
            if outcome is _RECHECK and recheck is not None:
                end = recheck()
        raise ProtocolError(f"{self.deploy_id}: the log keeps moving; retrying later")

    def _next_plan(self, attempt: int, bound: int | None, end: int | None) -> _Plan | None:
        """The next read (see ``_plan``). Where the successor begins before the next line by
        the offset known, that offset is older than the successor's (rows of an older
        deployment trimmed since): it is asked afresh, once per read, before nothing is read."""
        plan = None if attempt == 0 and self._seen(bound) else self._plan(bound)
        past = end is not None and self.ahead.line_number(self.offset) > end
        if plan is None and past and not self._probed:
            self._probed = True
            self.reprobe()
            plan = self._plan(bound)
        return plan

    def _judge(
        self, plan: _Plan, window: LogWindow, end: int | None, basis: tuple[int, int]
    ) -> tuple[_Plan, LogWindow] | object:
        """The plan and answer to deliver from; else a Batch (a gap), or whether to read again
        (``_AGAIN``, ``_RECHECK``) or at the next poll (``_LATER``)."""
        moved = window.deployment_offset != self.offset
        cut = _cut(plan, window)
        if moved and (cut or not self._known):  # the plan's numbers came from another offset
            self._accept(window)  # (guessed, or before late lines of an older deployment):
            self._forget_prefetched()  # rows its window lacks may not be this one's at all
            return _AGAIN
        if not self._known:  # the first answer says where the deployment is
            self._accept(window)
        if cut:
            front = self._below_trim(plan, window, cut, end)
            if not isinstance(front, tuple):
                return front
            plan, window = front
        outcome = self._check(plan, window, end, basis)
        return (plan, outcome) if isinstance(outcome, LogWindow) else outcome

    def _seen(self, bound: int | None) -> bool:
        """Whether the answer the last batch came from already showed there is nothing more
        to read below ``bound`` (once: the next read asks). A bound below the lines it
        delivered is news (a successor's offset that fell): that is read."""
        shown, self._shown = self._shown, None
        if shown is None or shown[0] is not self.ahead:
            return False
        _, at_end, read_to = shown
        if bound is None:
            return at_end
        return bound == read_to or (at_end and bound > read_to)

    def _plan(self, bound: int | None) -> _Plan | None:
        """Where the next read starts (at the last lines delivered) and ends; None if there is
        nothing to read below ``bound``."""
        cursor = self.ahead
        prints, unique = cursor.signature(self.window // 2)
        first = cursor.line_number(self.offset)
        checked = max(0, min(len(prints), cursor.position - cursor.trimmed, self.window - 1))
        unique = unique and realign.sure(prints, checked)
        start = first - checked
        stop = start + self.window
        if bound is not None:
            if first >= bound and checked <= 0:
                return None
            stop = min(stop, max(bound, start + 1))
        pair = None if unique else cursor.run_start()
        if pair is None or cursor.position - cursor.trimmed <= cursor.run:  # anchor not served
            return _Plan(cursor, prints, unique, first, checked, start, stop)
        return _Plan(cursor, prints, True, first, checked, start, stop, cursor.run, pair)

    def _below_trim(
        self, plan: _Plan, window: LogWindow, cut: int, end: int | None
    ) -> Batch | object | tuple[_Plan, LogWindow]:
        """The answer lacks its first ``cut`` rows: an API that keeps line numbers across
        retention serves none below the first row left. Confirmed by a second answer (the row
        before that first one is gone too, and that one is served), the rows left are compared
        and delivered as usual (a new plan), or the lines removed before they were read are
        reported as a gap of known size, the numbers being stable. ``_AGAIN``: retention moved
        on meanwhile. No row served at all may be a broken answer as well as retention of
        every row: only a later read (``_LATER``) that finds the same takes it as a gap."""
        at = plan.start + cut  # the first row still served, unless the window had none
        top = window.length if end is None else min(end, window.length)  # past it: not ours
        if not window.logs and at < top:
            at = self._first_served(at, top)
        if at >= top:
            if not self._unserved:
                self._unserved = True
                log.info("nothing_served", deploy=self.deploy_id, length=window.length)
                return _LATER
        else:
            confirm = self._fresh(at - 1, at + 1)
            if len(confirm.logs) != 1 or confirm.deployment_offset != window.deployment_offset:
                # The row before is there after all: rows are missing past the window's
                # first ones (a server's page cap), judged as usual, or inside it.
                hole = len(confirm.logs) == 2 and not self._aligned(window, plan)
                if end is None and hole:
                    raise RowsMissingInside(f"{self.deploy_id}: the answer lacks rows inside")
                return plan, window
            if window.logs and confirm.logs[0] != window.logs[0]:
                return _AGAIN
        self._unserved = False
        kept = replace(plan, start=at, checked=max(0, plan.first - at), unique=True, pair=None)
        lost = (at if end is None else min(at, end)) - plan.first
        if lost <= 0:  # only lines already delivered are gone
            return kept, window
        self._accept(window)
        self._forget_prefetched()
        cursor = self.ahead
        after = self.ahead = replace(
            cursor, position=cursor.position + lost, tail=(), run=0, anchor=None
        )
        log.warning(
            "gap",
            deploy=self.deploy_id,
            name=self.name,
            lost=lost,
            hint="the API removed lines (retention) before they could be read",
        )
        gap = Gap(self.project_id, self.deploy_id, self.name, lost, after.position)
        return Batch(None, gap, after, cursor)

    def _first_served(self, lo: int, hi: int) -> int:
        """The first row still served in ``[lo, hi)`` (``hi`` if none), all below ``lo`` being
        gone: bisected, one row per read, however far retention went. ``hi`` is where the
        deployment's rows end: past it are a newer one's, served or not, which would mislead
        the bisection (its lines trimmed, rows this deployment still has would look gone)."""
        while lo < hi:
            mid = (lo + hi) // 2
            if self._fresh(mid, mid + 1).logs:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _check(
        self, plan: _Plan, window: LogWindow, end: int | None, basis: tuple[int, int]
    ) -> LogWindow | object:
        """The answer to deliver from, once the last lines delivered are where it shows them;
        else what became of them (a Batch with a gap), or whether to read again (``_AGAIN``,
        or ``_RECHECK`` with the successor's offset asked again) or at the next poll
        (``_LATER``). ``basis`` is the offset and length known when the window was asked for
        (a prefetched one's answer may be older than the latest)."""
        past_end = end is not None and plan.first > end  # compared rows a newer one's
        if (
            self._aligned(window, plan)
            and not past_end
            and not self._surprised(window, basis, plan)
        ):
            return self._unless_doubtful(plan, window)
        window = realign.settle(
            self._fresh, plan.start, plan.stop, window, plan.checked, self.deploy_id
        )
        least = self._least_shift(window)
        if self._offset_moved(window, plan, least):
            self._accept(window)
            return _AGAIN
        if plan.checked == 0 or (
            (plan.unique or least == 0) and not past_end and self._aligned(window, plan)
        ):
            return window  # one answer's surprise: a lagging replica's, or an old prefetch
        return self._realign_or_wait(end, window, least, plan)

    def _offset_moved(self, window: LogWindow, plan: _Plan, least: int) -> bool:
        """Whether the settled answer moved the deployment's offset by the whole shift (then
        taken as it is, and read again). A move of any size outdates the windows prefetched."""
        if window.deployment_offset == self.offset:
            return False
        log.info(
            "offset_moved", deploy=self.deploy_id, was=self.offset, now=window.deployment_offset
        )
        self._forget_prefetched()
        return least == 0 or plan.checked == 0  # the offset's fall is the whole shift

    def _realign_or_wait(
        self, end: int | None, window: LogWindow, least: int, plan: _Plan
    ) -> Batch | object:
        """``_realign``, as ``_check`` answers it: a gap, or read again; now (``_AGAIN``), or a
        little later when a later answer must confirm this one (or the successor's offset be
        asked again: ``_RECHECK``)."""
        outcome = self._realign(end, window, least, plan)
        if outcome is _WAIT or outcome is _RECHECK:
            self._forget_prefetched()
            self.api.pause(_CONFIRM_AFTER)
            return outcome if outcome is _RECHECK else _AGAIN
        return _AGAIN if outcome is None else outcome

    def _deliver(
        self, plan: _Plan, window: LogWindow, end: int | None, bound: int | None, limit: int | None
    ) -> Batch | None:
        """The new rows of an answer whose first rows are the last lines delivered."""
        known = self.length
        self._accept(window)
        self._waited = False
        behind = self._export is not None and plan.stop + self.window <= self._export.end
        if len(window.logs) == plan.stop - plan.start and window.length > plan.stop and not behind:
            self._prefetch(plan.stop, window.length, bound)  # (the export has the next one)
        rows = list(window.logs)[plan.checked :]
        if bound is not None:
            rows = rows[: max(0, bound - plan.first)]
        if end is not None:  # aligned, and the successor marks the end: the size is known
            self.ahead = replace(plan.cursor, total=plan.cursor.trimmed + end - self.offset)
        self.caught_up = not rows and limit is None
        self._unserved = False
        if not rows:  # this catch-up is over: the next may read an export again
            self._export_declined = False
            self._caught_up()
            return None
        batch = self._batch(rows, plan.first)
        self._published.delivered(window, self.ahead)
        exported = self._export if window is self._exported else None
        self._shown_rows = (self.ahead, plan.start, window, exported)
        # An answer shorter than one before may be a lagging replica's: its end is not the end.
        at_end = plan.start + len(window.logs) >= window.length >= known
        self._shown = (self.ahead, at_end, plan.first + len(rows))
        if at_end:  # the catch-up is over even if no empty read is asked to show it
            self._export_declined = False
            self._caught_up()
        return batch

    def _caught_up(self) -> None:
        """A catch-up is over: new lines from here on came with a new publication."""
        self._doubt_said = False
        self._published.reset()

    def _accept(self, window: LogWindow) -> None:
        """Take the answer's numbers as the log's: what later answers are compared with."""
        self.offset, self.length = window.deployment_offset, window.length
        self._known = True

    def _aligned(self, window: LogWindow, plan: _Plan) -> bool:
        """Whether the answer's first rows are the last lines delivered (and, for a long run
        where the lines could have moved, its anchor is where it was)."""
        checked = plan.checked
        if checked <= 0:
            return True
        rows = window.logs
        promised = min(plan.stop, window.length) - plan.start
        if len(rows) < checked and len(rows) < promised:
            raise ProtocolError(f"{self.deploy_id}: the answer lacks rows its own length promises")
        if [fingerprint(row) for row in rows[:checked]] != list(plan.prints[-checked:]):
            return False
        if plan.pair is None or window.deployment_offset > 0:  # older rows go first
            return True
        at = plan.first - plan.run  # the run's first line, if nothing moved
        pair = self._fresh(at - 1, at + 1)
        same = pair.deployment_offset == window.deployment_offset
        return (
            same
            and pair.length >= window.length
            and tuple(fingerprint(row) for row in pair.logs) == plan.pair
        )

    def _least_shift(self, window: LogWindow) -> int:
        """``realign.least_shift`` from the numbers known, noting whether retention acts."""
        least = realign.least_shift(self.offset, self.length, window)
        self._trims_seen |= least > 0 or window.deployment_offset < self.offset
        return least

    def _unless_doubtful(self, plan: _Plan, window: LogWindow) -> LogWindow | Batch:
        """The aligned answer, or first a possible gap (see ``_doubtful``)."""
        return self._possible_gap(plan, window.length) if self._doubtful(plan, window) else window

    def _doubtful(self, plan: _Plan, window: LogWindow) -> bool:
        """Whether the answer, aligned, may still show the last lines delivered where a trim
        moved copies of them: retention acts on this deployment (its offset is 0: no older
        rows are left to go first), and those lines repeat back to its first line or a gap,
        or read the same further down (a longer pattern). Asked as a catch-up begins (the
        publication that brought its lines may have trimmed), then at each window until the
        gap is said, and after it only if a publication landed since it was and since the
        window before: a trim balanced by as many new rows leaves the numbers as they were,
        not the log's last rows. The rows further down are read afresh only if a
        publication landed since the window before (see ``Publications``); else they are
        those its answer showed. Where they read the same, a possible gap is said even if
        reads of the log's end show none: a publication that repeats the log's last rows
        leaves them as they were."""
        if plan.checked == 0 or plan.pair is not None:
            return False
        if window.deployment_offset > 0 or len(window.logs) <= plan.checked:
            return False
        if not self._retention_acts(plan.cursor, window.length):
            return False
        quiet = functools.partial(self._quiet, plan, window)
        if self._doubt_said and (
            plan.cursor is self._doubted or quiet() or not self._published_since()
        ):
            return False  # said before this very window (read again since), or nothing new
        if not plan.unique:
            return True
        below = max(window.deployment_offset, plan.start - self.window + plan.checked)
        if self._repeats_below(plan, below, not self._doubt_said and quiet()):
            return True
        if self._doubt_said:  # placed by content after a publication: compare with it now
            self._note_end(window.length)
        return False

    def _quiet(self, plan: _Plan, window: LogWindow) -> bool:
        """Whether nothing was published between the answer the lines up to the plan's cursor
        came from and ``window``: both are the export's (one snapshot), or reads of the
        log's end say so (see ``Publications``)."""
        shown = self._shown_rows
        if shown is not None and shown[0] is plan.cursor and window is self._exported:
            return shown[3] is not None and shown[3] is self._export
        return self._published.quiet(plan.cursor, window, self._asked_after(plan))

    def _asked_after(self, plan: _Plan) -> Callable[[], list[Future[LogWindow]]]:
        """The windows read ahead after ``plan``'s (up to a group): one read of the log's end
        made once they are answered covers them all."""

        def group() -> list[Future[LogWindow]]:
            keys = sorted(key for key in self._prefetched if key[0] > plan.start)
            return [self._prefetched[key] for key in keys[:_GROUP]]

        return group

    def _read_end(self, known: realign.End | None) -> EndRead:
        """How the log ends now (see ``realign.log_end``), and when it was read. Its rows too
        large for one answer are not watched (every window is then checked); a window the
        server refuses is halved for it."""
        answers: list[LogWindow] = []

        def fetch(start: int, stop: int) -> LogWindow:
            answers.append(
                self.api.read_logs(self.project_id, self.deploy_id, start, stop, fresh=True)
            )
            return answers[-1]

        rows = self.window
        while True:
            try:
                end = realign.log_end(fetch, self.length, rows, self.deploy_id, known)
                break
            except AnswerTooLargeError:
                return EndRead(-math.inf, math.inf, None)
            except WindowTooLargeError:
                # Read before any window (see ``_watch_first``), it may be the first to meet
                # a server's smaller window limit: fewer rows, as a window would be halved.
                if known is not None or rows <= 2:
                    return EndRead(-math.inf, math.inf, None)
                rows, answers[:] = rows // 2, []
        return EndRead(
            min(answer.asked for answer in answers), max(answer.answered for answer in answers), end
        )

    def _retention_acts(self, cursor: Cursor, length: int) -> bool:
        """Whether retention may remove this deployment's lines: it was seen to, the project
        is at its most rows, or the deployment is old enough for lines to age out."""
        if self._trims_seen or cursor.trimmed > 0 or length >= RETENTION:
            return True
        return cursor.launched is not None and self.clock() - cursor.launched >= AGED_OUT

    def _published_since(self) -> bool:
        """Whether the log's end moved since the last gap of unknown size was said: rows
        published, maybe as many trimmed. A log that repeats from its end back over a few
        windows cannot show a publication of more of the same (see ``realign.log_end``):
        that one goes unseen."""
        end = self._end
        if end is None:
            return False
        return realign.log_end(self._fresh, 0, 0, self.deploy_id, end) != end

    def _possible_gap(self, plan: _Plan, length: int) -> Batch:
        """A gap of unknown size before the next lines: some may have gone unseen."""
        return self._unknown_gap(
            plan.cursor,
            plan.cursor,
            "retention removes this deployment's oldest lines, and its last lines read "
            "repeat: whether unread lines went with them cannot be told, so a gap is said",
            length,
        )

    def _unknown_gap(self, cursor: Cursor, after: Cursor, hint: str, length: int) -> Batch:
        """A gap of unknown size at ``cursor``, said once until the reader catches up or a
        publication lands (see ``_doubtful``)."""
        self._note_end(length)
        self._doubted = after
        gap = Gap(self.project_id, self.deploy_id, self.name, None, cursor.position)
        log.warning("gap", deploy=self.deploy_id, name=self.name, lost="unknown", hint=hint)
        return Batch(None, gap, after, cursor)

    def _note_end(self, length: int) -> None:
        """How the log ends now (``length`` rows, as last answered), to tell whether a
        publication lands before a later window. Windows prefetched before may show the log
        as it was: dropped."""
        self._end = realign.log_end(self._fresh, length, self.window, self.deploy_id)
        self._forget_prefetched()
        self._doubt_said = True

    def _surprised(self, window: LogWindow, basis: tuple[int, int], plan: _Plan) -> bool:
        """Whether the answer's numbers say the lines moved since ``basis`` was known, where
        content alone could not tell."""
        moved = window.deployment_offset != self.offset
        return moved or (not plan.unique and realign.least_shift(*basis, window) > 0)

    def _fresh(self, start: int, stop: int) -> LogWindow:
        return self._fetch(start, stop, fresh=True)

    def _repeats_below(self, plan: _Plan, below: int, quiet: bool) -> bool:
        """Whether the last lines delivered also occur in rows ``[below, plan.first - 2)``
        (see ``realign.repeats``). If nothing was published since the answer they came from
        (``quiet``) and it holds those rows, they are compared as it showed them: no request."""
        last = plan.prints[-plan.checked :]
        shown = self._shown_texts(below, plan.first) if quiet else None
        if shown is None or [fingerprint(text) for text in shown[-len(last) :]] != list(last):
            return self._repeats_read(last, below, plan.first)
        return len(shown) - 1 > len(last) and realign.occurs(shown[-len(last) :], shown[:-2])

    def _repeats_read(self, last: Sequence[str], below: int, first: int) -> bool:
        """``realign.repeats`` on rows read afresh. Rows too large for one answer narrow the
        window (see ``_narrow``): fewer rows below are compared, as the next read would."""
        while True:
            try:
                return realign.repeats(self._fresh, last, below, first - 1)
            except AnswerTooLargeError:
                narrower = max(below, first - self.window)
                if narrower == below:
                    raise
                below = narrower

    def _shown_texts(self, start: int, stop: int) -> Sequence[str] | None:
        """Rows ``[start, stop)`` as the answer the last lines delivered came from showed
        them, if it holds them."""
        cursor, first, window, _ = self._shown_rows or (None, 0, None, None)
        if window is None or cursor is not self.ahead or not first <= start <= stop:
            return None
        if stop > first + len(window.logs):
            return None
        return window.logs[start - first : stop - first]

    def commit(self, batch: Batch) -> None:
        """The batch is handed out: whoever took it delivers it, so reads go on after it."""
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

    def _fetch(self, start: int, stop: int, *, fresh: bool = False) -> LogWindow:
        """One window (prefetched, if it was foreseen and ``fresh`` not asked for), halving
        it if the server asks.

        An answer over our own size cap raises AnswerTooLargeError once the window is halved
        (the caller asks again, with the overlap it checks), down to a single line.
        """
        self._restore_window(start, stop)
        if not fresh:
            exported = self._from_export(start, stop)
            if exported is not None:
                return exported
        future = None if fresh else self._take_prefetched(start, stop)
        return self._read_halving(start, stop, future, fresh=fresh)

    def _restore_window(self, start: int, stop: int) -> None:
        """The window's width from before ``_narrow``, once a read starts past its lines.
        Windows read ahead at the narrow width past ``[start, stop)`` are not those read asks
        from then on: kept, they would fill the read-ahead for the rest of the catch-up."""
        if self._narrowed is not None and start >= self._narrowed[0] + TAIL_LINES:
            self.window, self._narrowed = self._narrowed[1], None  # the large lines are behind
            this = self._prefetched.pop((start, stop), None)
            self._forget_prefetched()
            if this is not None:
                self._prefetched[(start, stop)] = this

    def _from_export(self, start: int, stop: int) -> LogWindow | None:
        """The window from the export placed, if there is one and it holds the window."""
        if self._export is None:
            return None
        self._exported = self._export.window(start, stop)
        return self._exported

    def _take_prefetched(self, start: int, stop: int) -> Future[LogWindow] | None:
        """The answer prefetched for ``[start, stop)``, unless it was not asked yet."""
        future = self._prefetched.pop((start, stop), None)
        if future is not None and future.cancel():  # still queued, maybe behind read-ahead
            return None  # another deployment's stuck server holds up: read it here, now
        return future

    def _read_halving(
        self, start: int, stop: int, future: Future[LogWindow] | None, *, fresh: bool
    ) -> LogWindow:
        """The prefetched answer (``future``), or one asked now. A refusal of the window's
        size halves it and asks again, down to two lines; an answer over our own size cap
        narrows it (``_narrow``) and raises."""
        while True:
            try:
                if future is not None:
                    return future.result()
                return self.api.read_logs(self.project_id, self.deploy_id, start, stop, fresh=fresh)
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

    def _consider_export(self, plan: _Plan, bound: int | None) -> None:
        """Read the backlog from an export when it is large, once per catch-up."""
        if self.exporter is None or self._export_declined:
            return
        if self._export is not None and plan.start < self._export.end:
            return
        self._export = None  # read past, if there was one
        end = self.length if bound is None else min(bound, self.length)
        if not self._known or not self.exporter.wanted(end - plan.first):
            return
        self._export = self.exporter.place(self.project_id, self.deploy_id, plan.first, end)
        self._export_declined = self._export is None

    def _misplaced(self, window: LogWindow, plan: _Plan) -> bool:
        """Whether ``window`` came from the export and its rows do not follow the lines
        delivered last: then the export is dropped, and windows are read from now on."""
        if window is not self._exported or self._aligned(window, plan):
            return False
        self._export, self._exported, self._export_declined = None, None, True
        if self.exporter is not None:
            self.exporter.disagreed(self.project_id, self.deploy_id)
        return True

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
        after = self.ahead = replace(
            cursor, position=cursor.position + 1, tail=(), run=0, anchor=None
        )
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
        # Where windows are told quiet, a group awaits the read of the log's end that covers
        # it while the next one is read: deeper. The end is first read only once a window is
        # to be asked of the API (not for windows an export holds).
        watching = self._published.watched
        depth = self._depth() + (2 * _GROUP if watching else 0)
        overlap = min(TAIL_LINES, self.window - 1)
        stop = self._asked_from(stop, overlap, bound)
        while len(self._prefetched) < depth:
            start = stop - overlap
            if start + overlap >= (length if bound is None else min(length, bound)):
                return
            nxt = start + self.window
            if bound is not None:
                nxt = min(nxt, max(bound, start + 1))
            exported = self._export is not None and nxt <= self._export.end  # read from it
            if (start, nxt) not in self._prefetched and not exported:
                if not watching and (watching := self._watching(length)):
                    depth += 2 * _GROUP
                self._ask_ahead(start, nxt)
                self._asked_to = (stop, nxt, self.window, bound)
            stop = nxt

    def _asked_from(self, stop: int, overlap: int, bound: int | None) -> int:
        """Where read-ahead goes on after a window ending at ``stop``: where the last window
        asked ends, if it was asked in the same steps from there (those in between are in
        flight), else ``stop``."""
        if self._asked_to is None or self._asked_to[2:] != (self.window, bound):
            return stop
        after, to = self._asked_to[:2]  # the last one asked: after ``after``, up to ``to``
        on_the_way = after >= stop and (after - stop) % (self.window - overlap) == 0
        return to if on_the_way else stop

    def _watch_first(self, plan: _Plan, bound: int | None) -> None:
        """As a catch-up begins whose windows will be read ahead and told quiet (see
        ``_prefetch``), the log's end is read before its first window is asked, and that
        window is asked with those ahead of it: a window asked before the read could not be
        told quiet, and the one after it would be checked."""
        if self.prefetcher is None or not self._known or self._published.watched:
            return
        more = self.length if bound is None else min(self.length, bound)
        held = self._export is not None and plan.stop <= self._export.end
        if plan.stop >= more or held or (plan.start, plan.stop) in self._prefetched:
            return
        if self._watching(self.length):
            self._ask_ahead(plan.start, plan.stop)
            self._prefetch(plan.stop, self.length, bound)

    def _ask_ahead(self, start: int, stop: int) -> None:
        """Ask for rows ``[start, stop)`` in the background (``_fetch`` takes the answer)."""
        assert self.prefetcher is not None
        read = functools.partial(self.api.read_logs, self.project_id, self.deploy_id, start, stop)
        self._prefetched[(start, stop)] = self.prefetcher.submit(read)
        self._basis[(start, stop)] = (self.offset, self.length)

    def _watching(self, length: int) -> bool:
        """Whether windows asked ahead now can be told quiet (see ``Publications``) where
        ``_doubtful`` will check them: the log's end is read, if it was not yet."""
        if self.offset > 0:
            return False
        return self._retention_acts(self.ahead, length) and self._published.watch()

    def _depth(self) -> int:
        """Windows to keep asked ahead: four times what may be in flight (the budget caps
        that), so that a worker that finishes takes the next window at once, rather than
        waiting for the reader to consume in order, and reading goes on while the outputs
        fsync or a group of windows awaits the read of the log's end that covers it."""
        return 4 * int(self.api.budget.window)

    def _forget_prefetched(self) -> None:
        for future in self._prefetched.values():
            future.cancel()
        self._prefetched.clear()
        self._basis.clear()
        self._asked_to = None

    def _realign(
        self, end: int | None, window: LogWindow, least: int, plan: _Plan
    ) -> Batch | object | None:
        """The lines delivered last are not where ``window`` (a settled answer) should show
        them: find them by content (then None: read again), give a gap, or wait (``_WAIT``,
        ``_LATER``). ``least`` is how far they moved at least, by the numbers."""
        expected = plan.cursor.line_number(window.deployment_offset) - 1
        try:
            located = self._locate(end, window, least, plan, expected)
        except realign.Changed:
            return _WAIT
        if not isinstance(located, tuple):
            return located
        found, sure, anchored = located
        self._waited = False
        self._accept(window)
        self._forget_prefetched()  # asked for before the lines moved
        if found is None:
            return self._gap(end)
        cursor = plan.cursor if anchored else replace(plan.cursor, anchor=None)
        return self._shift(cursor, expected - found, sure)

    def _locate(
        self, end: int | None, window: LogWindow, least: int, plan: _Plan, expected: int
    ) -> tuple[int | None, bool, bool] | object:
        """Where the lines delivered last end now, whether content alone is sure of it, and
        whether a long run's anchor is still known.

        Unique fingerprints, found, are believed. Where the answer (or the successor's offset,
        ``end``) does not even reach the last line delivered and content cannot place it, or
        repeating ones match higher than the numbers allow (anywhere in their run), the answer
        may be a lagging replica's: it is acted upon only once a later one says the same
        (``_WAIT``). Then the numbers place the lines, and content is not sure. A long run
        whose anchor is gone (trimmed with the lines before it) reaches back to the first row
        served: its lines are placed as high as the numbers allow, never above.
        """
        found, sure = self._found_by_content(plan, expected, end, window)
        short = _short(window, end, expected)
        if found == expected and (least == 0 or sure):  # where it was, yet the read disagreed
            return self._unmoved(window, expected, short)
        placed = found is not None and sure
        if not placed and (behind := self._end_behind(plan, expected, end, window)) is not None:
            return behind
        contradicted = _above_numbers(found, sure, expected - least)
        if (contradicted or (short and not placed)) and self._wait(window, expected):
            return _WAIT
        if contradicted:
            found, _ = self._find(plan, expected - least, end, window)
            sure = False
        if found is None and short and plan.pair is not None:
            return self._in_unanchored_run(plan, expected - least, end, window)
        return found, sure, True

    def _in_unanchored_run(
        self, plan: _Plan, highest: int, end: int | None, window: LogWindow
    ) -> tuple[int | None, bool, bool]:
        """Where a long run whose anchor is gone ends now: by its own lines, no higher than
        ``highest`` (the numbers' bound), never sure; its anchor no longer known."""
        found, _ = realign.search(self._fresh, plan.prints, highest, end, window, self.window)
        return found, False, found is None

    def _found_by_content(
        self, plan: _Plan, expected: int, end: int | None, window: LogWindow
    ) -> tuple[int | None, bool]:
        """Where the lines delivered last end now, by content (see ``_find``), and whether
        the fingerprints that matched are sure of it."""
        found, matched = self._find(plan, expected, end, window)
        return found, plan.unique and realign.sure(plan.pair or plan.prints, matched)

    def _unmoved(self, window: LogWindow, expected: int, short: bool) -> object:
        """The lines delivered last are where they were, yet the read disagreed: an answer
        that does not reach them (``short``) waits for a later one (``_WAIT``, once in a
        row); otherwise the answers contradict each other."""
        if short and self._wait(window, expected):
            return _WAIT
        raise ProtocolError(f"{self.deploy_id}: answers disagree with each other")

    def _end_behind(
        self, plan: _Plan, expected: int, end: int | None, window: LogWindow
    ) -> object | None:
        """Where content did not place the lines delivered last and the successor's offset
        (``end``) is below them: ``_LATER`` if they are still served past it (that end is
        stale), or ``_RECHECK`` to ask it again (once per read); None otherwise."""
        if plan.unique and self._beyond(plan, expected, end, window):
            log.info(
                "end_behind",
                deploy=self.deploy_id,
                end=end,
                delivered=expected + 1,
                hint="the next deployment's offset is below lines read from this one: "
                "read again at the next poll",
            )
            return _LATER
        if end is not None and end <= expected and not self._rechecked:
            self._rechecked = True
            log.info("end_behind", deploy=self.deploy_id, end=end, hint="asking it again")
            return _RECHECK
        return None

    def _wait(self, window: LogWindow, expected: int) -> bool:
        """Whether to wait for a later answer before acting on this one (once in a row)."""
        if self._waited:
            return False
        self._waited = True
        log.info(
            "answer_behind",
            deploy=self.deploy_id,
            length=window.length,
            delivered=expected + 1,
            hint="lines said gone; waiting for a later answer to confirm",
        )
        return True

    def _shift(self, cursor: Cursor, shift: int, sure: bool) -> Batch | None:
        """The lines delivered last are ``shift`` rows lower: None (read on from there), or,
        if content could not be sure, a gap of unknown size before reading on."""
        log.warning("realigned", deploy=self.deploy_id, shift=shift, position=cursor.position)
        after = replace(cursor, trimmed=cursor.trimmed + shift)
        if sure:
            self.ahead = after
            return None
        gap = self._unknown_gap(
            cursor,
            after,
            "the API removed lines (retention) where they repeat: how many were unread "
            "cannot be told",
            self.length,
        )
        self.ahead = after
        return gap

    def _find(
        self, plan: _Plan, expected: int, end: int | None, answer: LogWindow
    ) -> tuple[int | None, int]:
        """Where the last line delivered is now, at ``expected`` or below, and how many of the
        fingerprints matched: a long run is found by its anchor and first line."""
        if plan.pair is None:
            return realign.search(self._fresh, plan.prints, expected, end, answer, self.window)
        back = plan.run - 1  # from the run's first line to the last line delivered
        bound = None if end is None else end - back
        found, matched = realign.search(
            self._fresh, plan.pair, expected - back, bound, answer, self.window
        )
        return (None if found is None else found + back), matched

    def _beyond(self, plan: _Plan, expected: int, end: int | None, answer: LogWindow) -> bool:
        """Whether the lines delivered last are still served past ``end``, which is below
        them: then that end (the next deployment's offset, from another answer) is stale."""
        if end is None or end > expected:
            return False
        found, matched = self._find(plan, expected, None, answer)
        return (
            found is not None and found >= end and realign.sure(plan.pair or plan.prints, matched)
        )

    def _gap(self, end: int | None) -> Batch:
        """The last line delivered is gone: what follows it, up to the first line left, is lost."""
        self._note_end(self.length)
        cursor = self.ahead
        lost: int | None = None
        if cursor.total is not None:  # the size known when aligned; late lines may have grown it
            counted = cursor.total - self.visible(end) - cursor.position
            lost = counted if counted > 0 else None
        position = cursor.position + (lost or 0)
        gap = Gap(self.project_id, self.deploy_id, self.name, lost, position)
        after = self.ahead = replace(
            cursor, position=position, trimmed=position, tail=(), run=0, anchor=None
        )
        log.warning(
            "gap",
            deploy=self.deploy_id,
            name=self.name,
            lost=lost if lost is not None else "unknown",
            hint="the API removed lines (retention) before they could be read",
        )
        return Batch(None, gap, after, cursor)


def _cut(plan: _Plan, window: LogWindow) -> int:
    """How many rows the answer lacks, of those its own length promises: at its front, if
    the API keeps line numbers across retention."""
    promised = min(plan.stop, window.length) - plan.start
    return max(0, promised - len(window.logs))


def _short(window: LogWindow, end: int | None, expected: int) -> bool:
    """Whether the answer (or the successor's offset, ``end``) does not even reach the last
    line delivered, ``expected``."""
    return min(window.length, window.length if end is None else end) <= expected


def _above_numbers(found: int | None, sure: bool, highest: int) -> bool:
    """Whether content, not sure, found the lines delivered last higher than the numbers
    allow (``highest``: where they are at most, by the numbers)."""
    return not sure and found is not None and found > highest

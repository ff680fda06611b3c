"""One follow entry: a project's current deployment across redeploys, or one pinned deployment."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from tailer import logs
from tailer.api import Deployment, LogWindow, QcApi
from tailer.config import DRAIN, StartAt
from tailer.cursor import Cursor
from tailer.errors import NotFoundError
from tailer.export import Exporter
from tailer.prefetch import Prefetcher
from tailer.reader import Batch, DeploymentReader, RowsMissingInside
from tailer.since import first_since

log = logs.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Start:
    """Where a deployment with no saved cursor starts: ``end``, ``deployment`` or ``project``,
    ``last`` with ``count`` lines before the end (``tail -n N``), ``line`` after its first
    ``count`` lines (``tail -n +K``: count = K - 1; at the end if it has fewer), or ``since``:
    at its first line stamped at ``since`` or later (naive, the algorithm's time zone)."""

    kind: StartAt = StartAt.DEPLOYMENT
    count: int = 0
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Started:
    """A deployment begun, with its first cursor: saved before anything else happens, a
    restart resumes it where it began, lines or none (nothing else would tell the restarted
    follower that it was being followed or drained)."""

    cursor: Cursor


@dataclass(frozen=True, slots=True)
class Ended:
    """A deployment read to its end and let go, with its last cursor (done)."""

    cursor: Cursor


Event = Started | Batch | Ended
"""What a poll yields, in order: the deployments begun, their lines and gaps, those ended."""


class ProjectFollower:
    """Yields a project's new lines in order, deployment after deployment.

    Deployments form a chain, oldest first: the one followed now and, before it, those
    superseded by a redeploy that are still drained (their last lines can arrive minutes
    late). A deployment's lines end where its successor's begin, so each poll reads the
    successor's offset before the older deployment's lines. New rows are attributed to the
    latest deployment only after ``/live/read`` confirms no newer one exists.
    """

    def __init__(
        self,
        api: QcApi,
        project_id: int,
        *,
        name: str | None = None,
        deploy_id: str | None = None,
        start: Start = Start(),
        saved: Mapping[str, Cursor] | None = None,
        others: frozenset[str] = frozenset(),
        drain: float = DRAIN,
        clock: Callable[[], float] = time.monotonic,
        wait_for_deployment: bool = True,
        prefetcher: Prefetcher | None = None,
        snapshot: bool = False,
        exporter: Exporter | None = None,
    ) -> None:
        self._exporter = exporter
        self.api = api
        self._wait = wait_for_deployment
        # A snapshot (tail without -f) ends where the answer its start was computed from
        # ended: lines published after it, while later requests waited, came too late.
        self._snapshot = snapshot
        self._until: int | None = None  # the project-wide line where a snapshot ends
        self._prefetcher = prefetcher
        self.project_id = project_id
        self.pinned = deploy_id
        self.name = name
        self._start = start
        self._others = others  # deployments other follow entries read (pinned): never ours
        self._saved = dict(saved or {})
        self._drain = drain
        self._clock = clock
        self.chain: list[DeploymentReader] = []
        self._superseded: dict[str, float] = {}  # deploy id -> when a successor appeared
        self._successor: DeploymentReader | None = None  # for a pinned deployment
        self.deployment: Deployment | None = None
        self._waiting_logged = False
        self._first_row: tuple[str, Future[LogWindow]] | None = None  # see _ask_first_row
        self._begun: list[Cursor] = []  # first cursors of deployments begun, not yet said
        self.polls_caught_up = 0  # polls that read every deployment followed to its end

    @property
    def readers(self) -> list[DeploymentReader]:
        return list(self.chain)

    @property
    def caught_up(self) -> bool:
        """Every deployment followed was read to its end by the last poll."""
        return all(reader.caught_up for reader in self.chain)

    def poll(self) -> Iterator[Event]:
        """The deployments begun, their new lines (and gaps) in order, and those ended.

        Each batch is handed out once: the next poll goes on after it. Whoever takes a batch
        delivers it, or keeps it to deliver before anything more is read. What was read but
        not handed out when the iteration stopped (an error, a stop) is read again.
        """
        yield from self.begin()
        if not self.chain:
            return
        for reader in self.chain:
            reader.rewind()
        yield from self._forget_drained()
        yield from self._poll_chain()
        yield from self._said_begun()
        if self.caught_up:
            self.polls_caught_up += 1

    def begin(self) -> Iterator[Started]:
        """Choose the deployments to read and where each starts, once (the first ``poll``
        does it if nothing did before): those begun, to save at once. Nothing while the
        project has no deployment. Each is said once taken: those left when the taker
        stopped (a save refused) come first in the next poll."""
        if not self.chain:
            self._begin()
        return self._said_begun()

    def end(self) -> list[Ended]:
        """Let every deployment go (the project is no longer followed): their last cursors."""
        return [Ended(replace(reader.cursor, done=True)) for reader in self.chain]

    def _said_begun(self) -> Iterator[Started]:
        while self._begun:
            yield Started(self._begun.pop(0))

    def _hand_out(self, reader: DeploymentReader, batch: Batch) -> Iterator[Event]:
        """The deployments begun (a redeploy found: before any line of it), then the batch.
        It counts as handed out only once it is yielded: whoever takes the ``Started`` may
        fail to save it, and a batch then read again is not lost."""
        yield from self._said_begun()
        reader.commit(batch)
        yield batch

    def _poll_chain(self) -> Iterator[Event]:
        for index, reader in enumerate(list(self.chain)[:-1]):
            successor = self.chain[index + 1]
            successor.probe()
            yield from self._drain_reader(reader, successor)
        yield from self._follow_last()

    # -- the last deployment of the chain -------------------------------------------------

    def _follow_last(self) -> Iterator[Event]:
        reader = self.chain[-1]
        if self._successor is not None:
            self._successor.probe()
            yield from self._drain_reader(reader, self._successor)
            return
        before = reader.ahead
        try:
            batch = reader.read(limit=self._until)
        except RowsMissingInside:  # a newer deployment's trimmed rows, if there is one
            if self._newer_deployment(reader) != "redeployed":
                raise
            reader.ahead = before
            yield from self._poll_chain()
            return
        if batch is None:
            return
        answer = self._newer_deployment(reader)  # lines or a gap: either may be a newer one's
        if answer != "latest":  # rows of a newer deployment may be in it: read it again
            reader.ahead = before  # (after a stale answer, once a fresh one vouches for it)
            if answer == "redeployed":
                yield from self._poll_chain()
            return
        safe_end = reader.length  # rows below it were ours when /live/read said we were latest
        if self._until is not None:
            safe_end = min(safe_end, self._until)
        while batch is not None:
            yield from self._hand_out(reader, batch)
            if reader.ahead.line_number(reader.offset) >= safe_end:
                return  # all the answer promised is read: asking again would find no more
            batch = reader.read(limit=safe_end)

    def _drain_reader(
        self, reader: DeploymentReader, successor: DeploymentReader
    ) -> Iterator[Event]:
        """A superseded deployment's lines, up to its successor's offset (which the reader may
        ask again: one answer, maybe a lagging replica's, proves nothing)."""
        while (
            batch := reader.read(successor.offset, limit=self._until, recheck=successor.reprobe)
        ) is not None:
            yield from self._hand_out(reader, batch)

    def _newer_deployment(self, reader: DeploymentReader) -> str:
        """Ask the API which deployment is current: still ``reader``'s (``latest``), a newer
        one (``redeployed``: the chain is extended), or an older one (``stale``: a replica
        that has not seen a redeploy yet; deployments only move forward, so it is ignored)."""
        current = self.api.read_live(self.project_id)
        # A lagging /live/read names an older deployment: /live/list tells. A snapshot ends
        # where it began, so a redeploy after it need not be asked about.
        ended = self._snapshot and current.deploy_id == reader.deploy_id
        listed: list[Deployment] = [] if ended else self._listed()
        if current.deploy_id == reader.deploy_id:
            later = _launched_after(reader, listed)
            if not later:
                self.deployment = current
                return "latest"
            current = self._latest_listed(current, later)
        elif self._before(current, reader, listed):
            log.info(
                "stale_deployment",
                project=self.project_id,
                named=current.deploy_id,
                following=reader.deploy_id,
                hint="an answer older than what was read already; asking again next poll",
            )
            return "stale"
        successors = self._successors(reader.deploy_id, current, listed)
        log.info(
            "redeployed",
            project=self.project_id,
            old=reader.deploy_id,
            new=[deployment.deploy_id for deployment in successors],
        )
        if self.pinned:
            self._superseded[reader.deploy_id] = self._clock()
            self._successor = self._reader(successors[0], Start(StartAt.DEPLOYMENT), followed=False)
            return "redeployed"
        for deployment in successors:
            self._superseded[self.chain[-1].deploy_id] = self._clock()
            self.chain.append(self._reader(deployment, Start(StartAt.DEPLOYMENT)))
        self.deployment = current
        return "redeployed"

    def _before(
        self, current: Deployment, reader: DeploymentReader, listed: list[Deployment]
    ) -> bool:
        """Whether ``current`` was launched before ``reader``'s deployment: one the chain has
        moved past, one listed before it, or one launched earlier."""
        if current.deploy_id in {r.deploy_id for r in self.chain[:-1]}:
            return True
        ids = [deployment.deploy_id for deployment in listed]
        if current.deploy_id in ids and reader.deploy_id in ids:
            return ids.index(current.deploy_id) < ids.index(reader.deploy_id)
        since = reader.cursor.launched
        return (
            current.launched is not None
            and since is not None
            and (current.launched.timestamp() < since)
        )

    def _successors(
        self, deploy_id: str, current: Deployment, listed: list[Deployment] | None = None
    ) -> list[Deployment]:
        """The deployments launched after ``deploy_id``, up to the current one, in order."""
        listed = self._listed() if listed is None else listed
        ids = [deployment.deploy_id for deployment in listed]
        if deploy_id in ids and current.deploy_id in ids:
            later = listed[ids.index(deploy_id) + 1 : ids.index(current.deploy_id) + 1]
            if later:
                return later
        return [current]

    def _listed(self) -> list[Deployment]:
        """The project's deployments, oldest first."""
        listed = [
            d
            for d in self.api.list_live(project_id=self.project_id)
            if d.deploy_id not in self._others
        ]
        never = datetime.max.replace(tzinfo=UTC)
        return sorted(listed, key=lambda deployment: deployment.launched or never)

    # -- starting and ending ----------------------------------------------------------------

    def _begin(self) -> bool:
        """Find the deployment to follow; False while the project has none."""
        found = self._current()
        if found is None:
            return False
        current, listed = found
        self.deployment = current
        if self.name is None:
            self.name = current.project_name or str(self.project_id)
        if not self.pinned:
            for deployment in self._older(current, listed):
                self.chain.append(self._reader(deployment, Start(StartAt.DEPLOYMENT)))
                self._superseded[deployment.deploy_id] = self._clock()
        self._begin_followed(current, listed)
        if self._snapshot:
            self._until = self.chain[-1].length  # the probe that placed its start
        return True

    def _current(self) -> tuple[Deployment, list[Deployment]] | None:
        """The project's current deployment, and its deployments listed; None while it has
        none, or while ``/live/read`` names one older than what was read already."""
        try:
            current = self.api.read_live(self.project_id)
        except NotFoundError as exc:
            if not self._wait:
                raise NotFoundError(f"project {self.project_id} has no live deployment") from exc
            if not self._waiting_logged:
                log.warning("no_deployment", project=self.project_id, hint="waiting for one")
                self._waiting_logged = True
            return None
        self._ask_first_row(current)
        listed = self._listed()
        if self._lags(current, listed):
            log.info(
                "stale_deployment",
                project=self.project_id,
                named=current.deploy_id,
                hint="an answer older than what was read already; asking again next poll",
            )
            return None
        return self._latest(current, listed), listed

    def _ask_first_row(self, current: Deployment) -> None:
        """Ask what a new reader of ``current`` will probe, while ``/live/list`` confirms that
        it is the deployment to read: reading begins one round trip sooner."""
        self._first_row = None
        if self._prefetcher is None or self._saved:  # (with cursors saved, ``current`` may
            return  # lag what was read already: each poll until it does not would ask again)
        if self.pinned and self.pinned != current.deploy_id:
            return
        read = functools.partial(
            DeploymentReader.first_row, self.api, self.project_id, current.deploy_id
        )
        self._first_row = (current.deploy_id, self._prefetcher.submit(read))

    def _take_first_row(self, deploy_id: str) -> Future[LogWindow] | None:
        if self._first_row is None or self._first_row[0] != deploy_id:
            return None  # (an older deployment read first: the followed one comes next)
        asked, self._first_row = self._first_row[1], None
        return asked

    def _begin_followed(self, current: Deployment, listed: list[Deployment]) -> None:
        """The reader of the deployment followed (the pinned one, else the current one), last
        in the chain; for a pinned one superseded already, its successor, to know its end."""
        end = None
        target = current
        if self.pinned and self.pinned != current.deploy_id:
            later = self._successors(self.pinned, current, listed)[0]
            self._successor = self._reader(later, Start(), followed=False)
            end = self._successor.offset
            target = Deployment(self.project_id, self.pinned, "Undefined")
        # After deployments read before (a restart), the current one is a redeploy like any
        # other: it was launched after them, and its lines are read from its first one.
        redeploy = self.chain or self._read_before(current, listed)
        start = Start(StartAt.DEPLOYMENT) if redeploy else None
        self.chain.append(self._reader(target, start, end))

    def _latest(self, current: Deployment, listed: list[Deployment]) -> Deployment:
        """The project's current deployment: ``current``, unless ``/live/list`` shows one
        launched after it (a lagging ``/live/read`` that has not seen a redeploy yet)."""
        later = _after(current, listed)
        return self._latest_listed(current, later) if later else current

    def _latest_listed(self, named: Deployment, later: list[Deployment]) -> Deployment:
        """The last of ``later``, listed after the deployment ``/live/read`` named."""
        log.info(
            "stale_deployment",
            project=self.project_id,
            named=named.deploy_id,
            listed=later[-1].deploy_id,
            hint="/live/list shows a later deployment than /live/read: a redeploy",
        )
        return later[-1]

    def _lags(self, current: Deployment, listed: list[Deployment]) -> bool:
        """Whether ``current`` was launched before a deployment already read (one with a
        saved cursor, or the pinned one): a lagging answer, not where to begin."""
        ours = {self.pinned} if self.pinned else set(self._saved)
        ours.discard(current.deploy_id)
        if not ours:
            return False
        ids = [deployment.deploy_id for deployment in listed]
        if current.deploy_id not in ids:
            return False
        at = ids.index(current.deploy_id)
        return any(ids.index(d) > at for d in ours if d in ids)

    def _older(self, current: Deployment, listed: list[Deployment]) -> list[Deployment]:
        """Earlier deployments still to read before ``current``, oldest first.

        With ``start = "project"``: all of them. After a restart: those with an unfinished
        saved cursor, and every one launched after a deployment read before (a redeploy while
        we were away, or since the last one was read to its end and let go), so that no
        deployment's lines are skipped.
        """
        read = {c.deploy_id for c in self._saved.values()}
        read.discard(current.deploy_id)
        if self._start.kind != StartAt.PROJECT and not read:
            return []
        older = _launched_before(current, listed)
        if self._start.kind != StartAt.PROJECT:  # from the first one read before on
            ids = [d.deploy_id for d in older]
            older = older[min((ids.index(d) for d in read if d in ids), default=len(ids)) :]
        # Every one not finished: a deployment without a cursor delivered nothing yet.
        done = {c.deploy_id for c in self._saved.values() if c.done}
        return [d for d in older if d.deploy_id not in done]

    def _read_before(self, current: Deployment, listed: list[Deployment]) -> bool:
        """Whether a deployment launched before ``current`` was read to its end and let go
        (a saved cursor, done): ``current`` then followed it, a redeploy."""
        if self.pinned:
            return False
        done = {c.deploy_id for c in self._saved.values() if c.done}
        return any(d.deploy_id in done for d in _launched_before(current, listed))

    def _reader(
        self,
        deployment: Deployment,
        start: Start | None,
        end: int | None = None,
        *,
        followed: bool = True,
    ) -> DeploymentReader:
        """A reader at the saved cursor, or placed by ``start`` (the configured one if None).

        A new reader of a deployment to follow (not a pinned one's successor, only probed)
        is said to have begun (``Started``).
        """
        name = self.name or str(self.project_id)
        saved = self._saved.pop(deployment.deploy_id, None)
        if saved is not None:
            return DeploymentReader(
                self.api, saved, name, prefetcher=self._prefetcher, exporter=self._exporter
            )
        launched = deployment.launched.timestamp() if deployment.launched else None
        cursor = Cursor(self.project_id, deployment.deploy_id, launched=launched)
        reader = DeploymentReader(
            self.api, cursor, name, prefetcher=self._prefetcher, exporter=self._exporter
        )
        reader.probe(self._take_first_row(deployment.deploy_id))
        start = start or self._start
        if start.kind in (StartAt.END, StartAt.LAST, StartAt.LINE, StartAt.SINCE):
            reader.place(replace(cursor, position=self._skip(start, reader, end)))
        if followed:
            self._begun.append(reader.cursor)
        return reader

    def _skip(self, start: Start, reader: DeploymentReader, end: int | None) -> int:
        """How many of the deployment's lines a start that is not its first line passes."""
        visible = reader.visible(end)
        if start.kind == StartAt.LAST:
            return max(0, visible - start.count)
        if start.kind == StartAt.LINE:
            return min(start.count, visible)
        if start.since is not None:
            first = reader.offset
            deploy_id = reader.deploy_id
            return first_since(
                self.api, self.project_id, deploy_id, first, first + visible, start.since
            )
        return visible

    def _forget_drained(self) -> Iterator[Ended]:
        """Drop superseded deployments whose drain period is over."""
        now = self._clock()
        while len(self.chain) > 1:
            oldest = self.chain[0]
            since = self._superseded.get(oldest.deploy_id)
            if since is None or now - since < self._drain or not oldest.caught_up:
                return
            log.info("drained", deploy=oldest.deploy_id)
            self.chain.pop(0)
            del self._superseded[oldest.deploy_id]
            yield Ended(replace(oldest.cursor, done=True))


def _launched_after(reader: DeploymentReader, listed: list[Deployment]) -> list[Deployment]:
    """The deployments ``listed`` (oldest first) launched after ``reader``'s, in order: a
    replica that lags cannot list one that does not exist yet."""
    return _listed_after(reader.deploy_id, reader.cursor.launched, listed)


def _after(current: Deployment, listed: list[Deployment]) -> list[Deployment]:
    """The deployments ``listed`` (oldest first) launched after ``current``, in order."""
    launched = current.launched.timestamp() if current.launched else None
    return _listed_after(current.deploy_id, launched, listed)


def _launched_before(current: Deployment, listed: list[Deployment]) -> list[Deployment]:
    """The deployments ``listed`` (oldest first) but ``current`` and those launched after it
    (``/live/read`` may lag: never one of them is drained before it)."""
    later = {d.deploy_id for d in _after(current, listed)}
    return [d for d in listed if d.deploy_id != current.deploy_id and d.deploy_id not in later]


def _listed_after(
    deploy_id: str, launched: float | None, listed: list[Deployment]
) -> list[Deployment]:
    """Those listed after ``deploy_id`` or, if it is not listed, launched after ``launched``."""
    ids = [deployment.deploy_id for deployment in listed]
    if deploy_id in ids:
        later = listed[ids.index(deploy_id) + 1 :]
    else:
        later = [d for d in listed if launched is not None and _launched(d) > launched]
    return [deployment for deployment in later if deployment.launched is not None]


def _launched(deployment: Deployment) -> float:
    return deployment.launched.timestamp() if deployment.launched else float("-inf")

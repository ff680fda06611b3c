"""Many followers on one clock: when each polls, where its lines go, when its cursor moves."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from tailer import logs
from tailer.budget import requests_of
from tailer.config import DRAIN
from tailer.cursor import Cursor
from tailer.discovery import Discovery
from tailer.errors import (
    ApiError,
    AuthError,
    CursorSaveError,
    OutputError,
    OutputsBehindError,
    TransientError,
    UnreachableError,
)
from tailer.follower import Event, ProjectFollower
from tailer.health import Health
from tailer.lifecycle import Lifecycle
from tailer.pipeline import Pipeline
from tailer.polls import Polls, Result
from tailer.reader import MAX_WINDOW, Batch
from tailer.rhythm import Rhythm
from tailer.shutdown import Shutdown

log = logs.get_logger(__name__)

GROUP_LINES = 10 * MAX_WINDOW
"""Lines delivered (written, flushed, checkpointed) at once during a catch-up."""
TURN_GROUPS = 1
"""Groups a follower delivers in one turn before other due followers have theirs."""
_RECOVERABLE = (TransientError, UnreachableError, ApiError, OutputError)

MakeFollower = Callable[[Pipeline, int, frozenset[str]], ProjectFollower]
"""A follower of a project found running, for a pipeline (resuming from its cursors there),
leaving alone the deployments given (other follow entries read them)."""


@dataclass(slots=True)
class _Slot:
    follower: ProjectFollower
    pipeline: Pipeline
    delay: float
    due: float = 0.0
    failures: int = 0
    failing_since: float | None = None
    discovered: bool = False
    ending_since: float | None = None  # discovery no longer sees it running
    phased: bool = False
    events: Iterator[Event] | None = None  # a poll its last turn left unfinished
    kept: list[Batch] | None = None  # handed out, not delivered: delivered before any more
    rhythm: Rhythm | None = None  # when its deployment publishes (None: polled at the interval)
    asked: float = 0.0  # when its poll in hand began


class Scheduler:
    """Polls each follower when it is due and delivers its batches in order.

    Each follower belongs to a pipeline (its outputs and cursors); a group of its batches is
    delivered there, and a group that could not be is kept and delivered before the follower
    is asked for more (what a follower hands out is never read again). A follower that
    finds lines is polled again at ``interval``; an idle one backs off, doubling up to
    ``max_interval``; a failing one too, with one event when it starts failing and one when
    it recovers. A catch-up goes in turns of ``TURN_GROUPS`` groups, so that it holds back
    no other follower (nor discovery). With discovery, projects that start running get a
    follower in every pipeline, and those that stop are dropped once drained; so are, at
    start, projects whose deployment was left unfinished, whatever their status now;
    ``make_follower`` makes their followers.

    With ``polls`` above one, ``run`` polls up to that many followers at once (``Polls``):
    a follower whose answers trickle or never come holds back only itself. Deliveries to a
    pipeline (and its cursor saves) still go one at a time; the schedule is kept by the
    thread that runs the loop.
    """

    def __init__(
        self,
        pipelines: Sequence[Pipeline],
        shutdown: Shutdown,
        *,
        interval: float,
        max_interval: float,
        drain: float = DRAIN,
        discovery: Discovery | None = None,
        make_follower: MakeFollower | None = None,
        clock: Callable[[], float] = time.monotonic,
        health: Health | None = None,
        polls: int = 1,
        lifecycle: Lifecycle | None = None,
        rhythmic: bool = True,
        learn_fast: bool = False,
    ) -> None:
        self.pipelines = list(pipelines)
        self.rhythmic = rhythmic  # poll each deployment as it publishes, else at the interval
        self.learn_fast = learn_fast  # someone watches: learn each rhythm at a faster pace
        self.shutdown = shutdown
        self.interval = interval
        self.max_interval = max(interval, max_interval)
        self.drain = drain
        if discovery is not None and make_follower is None:
            raise ValueError("discovery needs a way to make followers")
        self.discovery = discovery
        self._make_follower = make_follower
        self._clock = clock
        self.slots = [
            _Slot(follower, pipeline, interval, rhythm=self._rhythm())
            for pipeline in self.pipelines
            for follower in pipeline.followers
        ]
        self.delivered = 0
        self._phases = 0
        self.health = health or Health()  # shared by the workers, if several
        self.lifecycle = lifecycle  # shared too: says when each deployment starts and ends
        self._on_progress: Callable[[], None] | None = None
        self._resumed = False  # projects left unfinished by the last run have followers
        # Side by side only once ``run`` has begun: ``poll_once`` polls (and begins) each
        # follower in turn, in the calling thread.
        self._polls = Polls(1, shutdown)
        self._pool = Polls(polls, shutdown)
        self._outputs = {pipeline: threading.RLock() for pipeline in self.pipelines}

    @property
    def healthy_once(self) -> bool:
        """Some poll or discovery has succeeded."""
        return self.health.healthy_once

    @property
    def auth_failing_since(self) -> float | None:
        return self.health.auth_failing_since

    @property
    def failing(self) -> int:
        return sum(1 for slot in self.slots if slot.failing_since is not None)

    def poll_once(self) -> int:
        """Discover, then poll every follower now until caught up.

        An output that fails holds back no other: every follower of every pipeline is polled
        (pipeline by pipeline, so the files before Loki), and only then does
        OutputsBehindError name the outputs left behind. Any other error propagates at once.
        """
        self._discover()
        found = 0
        failures: dict[str, OutputError] = {}  # one per output (all of Loki's are alike)
        behind: set[Pipeline] = set()
        for slot in sorted(self.slots, key=lambda s: self.pipelines.index(s.pipeline)):
            try:
                found += self._poll(slot)
            except OutputError as exc:
                failures.setdefault(str(exc), exc)
                behind.add(slot.pipeline)
        if failures:
            done = [p.name for p in self.pipelines if p not in behind]
            raise OutputsBehindError(list(failures.values()), up_to_date=done)
        return found

    def run(
        self,
        on_idle: Callable[[], None] | None = None,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        """Poll followers as they fall due until a stop is requested; ``on_idle`` runs once
        per turn of the loop, ``on_progress`` after each group delivered (a turn of many
        followers' groups can be long, and must not look like a hung loop to systemd's
        watchdog). Followers begin first, each saving where it starts."""
        self._on_progress = on_progress
        self._polls = self._pool
        for slot in list(self.slots):
            self._begin(slot)
        try:
            while not self.shutdown.requested:
                self._turn_once(on_idle)
        finally:
            if self._polls.size > 1:  # the writes and saves polls have in hand end first
                self.shutdown.settle()

    def _turn_once(self, on_idle: Callable[[], None] | None) -> None:
        """Take the polls that ended, discover, start the polls due, then wait for the next
        to fall due (or, with polls in hand, for one to end)."""
        ended = self._polls.collect()
        if self.discovery is not None and self._clock() >= self.discovery.due:
            self._discover()
        now = self._clock()
        due = (s for s in self.slots if s.due <= now and not self._polls.busy(s.follower))
        for slot in sorted(due, key=lambda s: s.due):
            if self.shutdown.event.is_set():  # a stop arrived while polling
                break
            self._polls.start(
                slot.follower, self._turn(slot), functools.partial(self._polled, slot)
            )
        if on_idle is not None and (ended or not self._polls.in_flight):
            on_idle()  # not while every poll in hand is stuck: that is no sign of life
        wait = self._polls.wait if self._polls.in_flight else self.shutdown.wait
        wait(self._next_wake() - self._clock())

    def status(self) -> str:
        """One line for systemd's STATUS=."""
        return status([self])

    def _next_wake(self) -> float:
        wakes = [slot.due for slot in self.slots if not self._polls.busy(slot.follower)]
        if self.discovery is not None:
            wakes.append(self.discovery.due)
        return min(wakes, default=self._clock() + self.interval)

    def _phase(self, slot: _Slot) -> float:
        """Once, after its first poll: a shift that spreads the slots over the interval.

        Every follower starts at once (to catch up at start); without a shift they would stay
        in step and poll in bursts. The shifts are the golden-ratio sequence, evenly spread.
        """
        if slot.phased:
            return 0.0
        slot.phased = True
        self._phases += 1
        return (self._phases * 0.6180339887498949) % 1.0 * slot.delay

    def _discover(self) -> None:
        if self.discovery is None:
            return
        if not self._resumed:
            self._resumed = True
            self._resume()
        try:
            running = self.discovery.running()
        except AuthError as exc:  # as for a poll: fatal at start, else a grace period
            self._auth_refused(exc)
            return
        if running is None:
            return
        self._succeeded()
        covered = self._coverage()
        for project_id, deploy_id in sorted(running.items()):
            if not covered(project_id, {deploy_id}):
                self._add(project_id, "discovered")
        for slot in self.slots:
            if not slot.discovered:
                continue
            if slot.follower.project_id in running:
                slot.ending_since = None
            elif slot.ending_since is None:
                slot.ending_since = self._clock()

    def _resume(self) -> None:
        """Projects whose deployments the last run left unfinished (saved cursors not done)
        get a follower as if discovered, whatever their status now: one that stopped while
        qc-tail was down still has lines to read (those before a crash most of all). Once
        drained, they are dropped like any project discovery no longer lists as running."""
        assert self.discovery is not None
        unfinished: dict[int, set[str]] = {}
        for pipeline in self.pipelines:
            for project_id, deploy_id in pipeline.unfinished:
                if self.discovery.wants(project_id):
                    unfinished.setdefault(project_id, set()).add(deploy_id)
        covered = self._coverage()
        for project_id, deploy_ids in sorted(unfinished.items()):
            if not covered(project_id, deploy_ids):
                self._add(project_id, "resumed")

    def _coverage(self) -> Callable[[int, set[str]], bool]:
        """Whether a follower reads these deployments of a project already: one that follows
        it across redeploys, or follow entries pinned to each of them."""
        followed = {s.follower.project_id for s in self.slots if s.follower.pinned is None}
        pinned: dict[int, set[str]] = {}
        for slot in self.slots:
            if slot.follower.pinned is not None:
                pinned.setdefault(slot.follower.project_id, set()).add(slot.follower.pinned)

        def covered(project_id: int, deploy_ids: set[str]) -> bool:
            return project_id in followed or deploy_ids <= pinned.get(project_id, set())

        return covered

    def _add(self, project_id: int, event: str) -> None:
        """A follower of the project in every pipeline, begun at once."""
        assert self._make_follower is not None
        log.info(event, project=project_id, outputs=", ".join(p.name for p in self.pipelines))
        followers = [slot.follower for slot in self.slots if slot.follower.project_id == project_id]
        others = frozenset(f.pinned for f in followers if f.pinned is not None)  # theirs
        for pipeline in self.pipelines:
            follower = self._make_follower(pipeline, project_id, others)
            slot = _Slot(follower, pipeline, self.interval, discovered=True, rhythm=self._rhythm())
            self.slots.append(slot)
            self._begin(slot)

    def _begin(self, slot: _Slot) -> None:
        """Fix where a follower starts, and save it before any other work: a restart then
        resumes there even if it came before the follower's first poll (which would
        otherwise begin at whatever deployment is current by then)."""
        begun = functools.partial(self._begun, slot)
        self._polls.start(slot.follower, functools.partial(self._start, slot), begun)

    def _start(self, slot: _Slot) -> None:
        with self._requests(slot):
            begun = slot.follower.begin()
        for started in begun:
            self._persist(slot, started.cursor)
        self._observe(slot)

    def _observe(self, slot: _Slot) -> None:
        if self.lifecycle is not None:
            self.lifecycle.observe(slot.pipeline.name, slot.follower)

    def _begun(self, slot: _Slot, result: Result) -> None:
        try:
            result()
        except _RECOVERABLE as exc:  # as a failed poll: the next one begins
            self._failed(slot, exc)
        except AuthError as exc:
            self._auth_failed(slot, exc)

    def _turn(self, slot: _Slot) -> Callable[[], int]:
        def turn() -> int:
            if slot.events is None:  # a new poll (not the rest of one): when it asked
                slot.asked = self._clock()
            with self._requests(slot):
                return self._poll(slot, turn=TURN_GROUPS)

        return turn

    def _requests(self, slot: _Slot) -> AbstractContextManager[None]:
        """Polled side by side, a project's requests leave a place of the budget to others:
        one whose server stops answering mid catch-up cannot take every place."""
        if self._polls.size > 1 and len(self.slots) > 1:
            return requests_of(slot.follower.project_id)
        return contextlib.nullcontext()

    def _rhythm(self) -> Rhythm | None:
        return Rhythm(self.interval, learn_fast=self.learn_fast) if self.rhythmic else None

    def periods(self) -> dict[int, float]:
        """Each project's learned publishing period, in seconds, while it is followed."""
        return {
            slot.follower.project_id: slot.rhythm.period
            for slot in list(self.slots)
            if slot.rhythm is not None and slot.rhythm.following and slot.rhythm.period
        }

    def _polled(self, slot: _Slot, result: Result) -> None:
        try:
            found: int = result()
        except _RECOVERABLE as exc:
            self._failed(slot, exc)
            return
        except AuthError as exc:
            self._auth_failed(slot, exc)
            return
        self._succeeded()
        self._recovered(slot)
        if slot.events is not None:  # its turn ended mid catch-up: due again, after others
            slot.delay = self.interval
            slot.due = self._clock()
            return
        slot.delay = self.interval if found else min(slot.delay * 2, self.max_interval)
        due = self._rhythm_due(slot, found)
        slot.due = self._clock() + slot.delay + self._phase(slot) if due is None else due
        if not found and self._ended(slot):
            try:
                self._drop(slot)
            except CursorSaveError as exc:  # dropped at a later poll, once saved
                self._failed(slot, exc)

    def _rhythm_due(self, slot: _Slot, found: int) -> float | None:
        """When the deployment's next snapshot is due to be polled, if it publishes in a
        rhythm learned by now; None: at the interval. A deployment that is not Running
        publishes only what is left: it is polled at the interval."""
        rhythm = slot.rhythm
        if rhythm is None:
            return None
        following = rhythm.following
        rhythm.observe(slot.asked, found > 0)
        if following:  # the window's quiet polls are no sign of an idle deployment
            slot.delay = self.interval
        deployment = slot.follower.deployment
        if deployment is not None and deployment.status != "Running":
            return None
        due = rhythm.next_poll(self._clock())
        if self.lifecycle is not None and (found or following != rhythm.following):
            self.lifecycle.rhythm(slot.follower, rhythm.period if rhythm.following else None)
        if found:
            log.debug(
                "rhythm",
                project=slot.follower.project_id,
                name=slot.follower.name,
                period=None if rhythm.period is None else round(rhythm.period, 1),
                phase=None if rhythm.phase is None else round(rhythm.phase, 1),
                spread=round(rhythm.spread, 1),
                following=rhythm.following,
                next_in=None if due is None else round(due - self._clock(), 1),
            )
        return due

    def _poll(self, slot: _Slot, turn: int | None = None) -> int:
        """Deliver a follower's new batches, several windows at a time; after ``turn``
        groups, stop: the next call goes on where this one stopped.

        A group that could not be delivered (an output failed, the state directory refused
        its first cursor, the follower failed before the group was full) is kept, and
        delivered before the follower is asked for more.
        """
        with self._outputs[slot.pipeline], self.shutdown.critical():
            slot.pipeline.save_unsaved()  # cursors a full state directory held back come first
        found = self._deliver_kept(slot)
        events = slot.events or slot.follower.poll()
        slot.events = None  # kept only if the turn ends with events to come
        group: list[Batch] = []
        lines = groups = 0
        try:
            for event in events:
                if not isinstance(event, Batch):  # a deployment begun or ended
                    self._persist(slot, event.cursor)
                    continue
                group.append(event)
                lines += event.count
                if lines >= GROUP_LINES:
                    full, group, lines, groups = group, [], 0, groups + 1
                    found += self._deliver(slot, full)  # which keeps it if it fails
                    if turn is not None and groups >= turn:
                        slot.events = events
                        break
        except BaseException:  # the follower failed, or a cursor could not be saved
            slot.kept = slot.kept or group or None
            raise
        if group:
            found += self._deliver(slot, group)
        self._observe(slot)
        return found

    def _persist(self, slot: _Slot, cursor: Cursor) -> None:
        with self._outputs[slot.pipeline], self.shutdown.critical():
            slot.pipeline.persist(cursor)

    def _deliver_kept(self, slot: _Slot) -> int:
        group, slot.kept = slot.kept, None
        return self._deliver(slot, group) if group else 0

    def _deliver(self, slot: _Slot, group: list[Batch]) -> int:
        with self._outputs[slot.pipeline]:  # one delivery at a time to a pipeline
            try:
                slot.pipeline.deliver(group, guard=self.shutdown.critical)
            except CursorSaveError as exc:
                if not exc.delivered:  # else the outputs have the lines: only cursors wait
                    slot.kept = group
                raise
            except BaseException:
                slot.kept = group
                raise
            found = sum(batch.count for batch in group)
            self.delivered += found
        self._succeeded()  # lines delivered: the API and the outputs both work
        if self._on_progress is not None:
            self._on_progress()
        return found

    def _ended(self, slot: _Slot) -> bool:
        """A discovered project that stopped running, drained, and read to the end."""
        since = slot.ending_since
        if since is None or self._clock() - since < self.drain:
            return False
        return slot.follower.caught_up

    def _drop(self, slot: _Slot) -> None:
        for ended in slot.follower.end():
            self._persist(slot, ended.cursor)
        log.info("stopped_following", project=slot.follower.project_id, name=slot.follower.name)
        self.slots.remove(slot)
        if self.lifecycle is not None:
            self.lifecycle.dropped(slot.pipeline.name, slot.follower)

    def _succeeded(self) -> None:
        self.health.succeeded()

    def _auth_failed(self, slot: _Slot, exc: AuthError) -> None:
        self._auth_refused(exc)
        slot.delay = self.max_interval
        slot.due = self._clock() + slot.delay

    def _auth_refused(self, exc: AuthError) -> None:
        """As for a poll, so for discovery: see ``Health``."""
        self.health.refused(exc)

    def _failed(self, slot: _Slot, exc: Exception) -> None:
        slot.failures += 1
        if self.shutdown.requested:  # cut short by the stop (a worker's retries end so)
            return
        if slot.failing_since is None:
            slot.failing_since = self._clock()
            log.warning(
                "poll_failing",
                project=slot.follower.project_id,
                name=slot.follower.name,
                error=str(exc),
                hint="retrying with backoff; no line is lost while this lasts",
            )
        else:
            log.debug("poll_failed", project=slot.follower.project_id, error=str(exc))
        slot.delay = min(max(slot.delay, self.interval) * 2, self.max_interval)
        wait = getattr(exc, "retry_after", None)  # a Retry-After beyond what retries covered
        slot.due = self._clock() + max(slot.delay, min(wait or 0.0, 900.0))

    def _recovered(self, slot: _Slot) -> None:
        if slot.failing_since is None:
            return
        log.info(
            "poll_recovered",
            project=slot.follower.project_id,
            name=slot.follower.name,
            failures=slot.failures,
            seconds=round(self._clock() - slot.failing_since, 1),
        )
        slot.failures, slot.failing_since = 0, None


def status(schedulers: Sequence[Scheduler]) -> str:
    """One line for systemd's STATUS=, over every worker's scheduler."""
    slots = [slot for scheduler in schedulers for slot in list(scheduler.slots)]
    projects = len({slot.follower.project_id for slot in slots})
    delivered = sum(scheduler.delivered for scheduler in schedulers)
    failing = sum(1 for slot in slots if slot.failing_since is not None)
    text = f"following {projects} project(s), {delivered} lines delivered"
    if failing:
        text += f", {failing} failing"
    since = min((s.auth_failing_since for s in schedulers if s.auth_failing_since), default=None)
    if since is not None:
        text += f", auth failing since {time.strftime('%H:%M:%S', time.localtime(since))}"
    return text

"""Many followers on one clock: when each polls, where its lines go, when its cursor moves."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from tailer.errors import ApiError, OutputError, TransientError, UnreachableError
from tailer.follower import ProjectFollower
from tailer.reader import Batch
from tailer.shutdown import Shutdown
from tailer.sinks import Record, Sink

log = structlog.get_logger(__name__)

Commit = Callable[[Batch], None]
_RECOVERABLE = (TransientError, UnreachableError, ApiError, OutputError)


@dataclass(slots=True)
class _Slot:
    follower: ProjectFollower
    delay: float
    due: float = 0.0
    failures: int = 0
    failing_since: float | None = None


class Scheduler:
    """Polls each follower when it is due and delivers its batches in order.

    A batch goes to every output, is flushed, then ``commit`` persists its cursor; only then
    does the follower move on. A follower that finds lines is polled again at ``interval``;
    an idle one backs off, doubling up to ``max_interval``; a failing one too, with one event
    when it starts failing and one when it recovers.
    """

    def __init__(
        self,
        followers: Sequence[ProjectFollower],
        outputs: Sequence[Sink],
        shutdown: Shutdown,
        *,
        interval: float,
        max_interval: float,
        commit: Commit | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outputs = list(outputs)
        self.shutdown = shutdown
        self.interval = interval
        self.max_interval = max(interval, max_interval)
        self._commit = commit
        self._clock = clock
        self.slots = [_Slot(follower, interval) for follower in followers]
        self.delivered = 0

    def poll_once(self) -> int:
        """Poll every follower now, catching up on all that is available; errors propagate."""
        return sum(self._poll(slot) for slot in self.slots)

    def run(self) -> None:
        """Poll followers as they fall due until a stop is requested."""
        while not self.shutdown.requested:
            for slot in sorted(self.slots, key=lambda s: s.due):
                if self.shutdown.requested or slot.due > self._clock():
                    break
                self._poll_guarded(slot)
            wake = min((slot.due for slot in self.slots), default=self._clock() + self.interval)
            self.shutdown.wait(wake - self._clock())

    def _poll_guarded(self, slot: _Slot) -> None:
        try:
            found = self._poll(slot)
        except _RECOVERABLE as exc:
            self._failed(slot, exc)
            return
        self._recovered(slot)
        slot.delay = self.interval if found else min(slot.delay * 2, self.max_interval)
        slot.due = self._clock() + slot.delay

    def _poll(self, slot: _Slot) -> int:
        found = 0
        for batch in slot.follower.poll():
            with self.shutdown.critical():
                self._deliver(batch)
                slot.follower.commit(batch)
            found += len(batch.lines)
        self.delivered += found
        return found

    def _deliver(self, batch: Batch) -> None:
        records: Sequence[Record] = batch.lines or ((batch.gap,) if batch.gap else ())
        for output in self.outputs:
            output.write(records)
        for output in self.outputs:
            output.flush()
        if self._commit is not None:
            self._commit(batch)

    def _failed(self, slot: _Slot, exc: Exception) -> None:
        slot.failures += 1
        if slot.failing_since is None:
            slot.failing_since = self._clock()
            log.warning(
                "poll_failing",
                project=slot.follower.project_id,
                name=slot.follower.name,
                error=str(exc),
                hint="retrying with backoff; lines are not lost while the API is away",
            )
        else:
            log.debug("poll_failed", project=slot.follower.project_id, error=str(exc))
        slot.delay = min(max(slot.delay, self.interval) * 2, self.max_interval)
        slot.due = self._clock() + slot.delay

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

"""A pipeline: outputs that share one set of cursors, and how a batch moves through them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager

from tailer.cursor import Cursor
from tailer.errors import CursorSaveError
from tailer.follower import ProjectFollower
from tailer.metrics import Tally
from tailer.reader import Batch
from tailer.sinks import Record, Sink

Save = Callable[[Cursor], None]
Load = Callable[[int], Mapping[tuple[int, str], Cursor]]
"""The saved cursors of one project."""
Guard = Callable[[], AbstractContextManager[None]]


class Pipeline:
    """Outputs fed together, in order, from one cursor per deployment.

    A group of batches is written to each output and flushed, one output after the other;
    each output then stamps the cursor with what it needs to recover (a file's length,
    Loki's last timestamp), and the cursor is saved. Outputs that must not wait on each
    other (files and Loki) go in separate pipelines, each with its own cursors.

    A cursor the state directory could not take (full, read-only) waits in ``unsaved``;
    ``save_unsaved`` saves it before anything more is delivered. Until then a restart
    starts from the older cursor on disk, which files are cut back to: nothing is doubled.
    """

    def __init__(
        self,
        outputs: Sequence[Sink],
        followers: Iterable[ProjectFollower] = (),
        *,
        name: str = "main",
        save: Save | None = None,
        load: Load | None = None,
        saved: Iterable[tuple[int, str]] = (),
        unfinished: Iterable[tuple[int, str]] = (),
        interruptible: bool = False,
        metrics: Tally | None = None,
        labels: Sequence[str] = (),
        counts_gaps: bool = True,
    ) -> None:
        self.name = name
        self.metrics = metrics  # with ``labels``: each output's name there, in order
        self.labels = list(labels)
        self._counts_gaps = counts_gaps  # of pipelines that read the same gaps, one counts
        self.interruptible = interruptible  # its writes are pushes that a stop may cut
        self.outputs = list(outputs)
        self.followers = list(followers)
        self._save = save
        self._load = load
        self._saved: set[tuple[int, str]] = set(saved)  # deployments with a cursor on disk
        self.unfinished = frozenset(unfinished)  # those not done when the run began
        self.unsaved: dict[tuple[int, str], Cursor] = {}

    def saved(self, project_id: int) -> Mapping[tuple[int, str], Cursor]:
        """The project's cursors as saved now (none if this pipeline saves none)."""
        return {} if self._load is None else self._load(project_id)

    def deliver(self, group: Sequence[Batch], guard: Guard = contextlib.nullcontext) -> int:
        """Write, flush, stamp and save: after this the group is durable in every output.

        ``guard`` (a stop's critical section) wraps what a stop must not cut short: the
        whole delivery, or, for an ``interruptible`` pipeline, all but the writes. A push to
        a hung Loki is then abandoned at once on SIGTERM: its cursor was not saved, and the
        same push, made again after the restart, is the same entries.
        """
        with guard():
            for batch in group:  # a first delivery: first save where it starts, so that a
                key = (batch.cursor.project_id, batch.cursor.deploy_id)  # crash can be undone
                if key not in self._saved and batch.before is not None:
                    self.persist(batch.before)
            if not self.interruptible:
                self._write(group)
                return self._save_latest(group)
        self._write(group)
        with guard():
            return self._save_latest(group)

    def _write(self, group: Sequence[Batch]) -> None:
        records: list[Record] = [b.record for b in group if b.record is not None]
        metrics = self.metrics
        lines = sum(batch.count for batch in group)
        for index, output in enumerate(self.outputs):
            if metrics is not None:
                metrics.writing(self.labels[index], lines)
            output.write(records)  # one at a time, in order: stdout (last) gets a line
            output.flush()  # only once the files have it durably, so a failed fsync,
            if metrics is not None:  # retried, does not print it twice
                metrics.delivered(self.labels[index], lines)
        if metrics is not None:
            metrics.batches(group, gaps=self._counts_gaps)

    def _save_latest(self, group: Sequence[Batch]) -> int:
        latest = {batch.cursor.deploy_id: batch.cursor for batch in group}
        failed: CursorSaveError | None = None
        for cursor in latest.values():  # each, even after one failed: all wait alike
            try:
                self.persist(cursor)
            except CursorSaveError as exc:
                failed = exc
        if failed is not None:
            failed.delivered = True
            raise failed
        return sum(batch.count or (batch.gap is not None) for batch in group)

    def persist(self, cursor: Cursor) -> None:
        for output in self.outputs:
            cursor = output.stamp(cursor)
        self._store(cursor)

    def save_unsaved(self) -> None:
        """Save the cursors a failed save left waiting; CursorSaveError while it fails."""
        for cursor in list(self.unsaved.values()):
            self._store(cursor)

    def _store(self, cursor: Cursor) -> None:
        key = (cursor.project_id, cursor.deploy_id)
        if self._save is not None:
            try:
                self._save(cursor)
            except CursorSaveError:
                self.unsaved[key] = cursor
                raise
        self.unsaved.pop(key, None)
        if cursor.done:  # nothing more of it will come: a daemon that runs for months
            self._saved.discard(key)  # would otherwise keep one key per deployment it saw
        else:
            self._saved.add(key)

    def close(self) -> None:
        for output in self.outputs:
            output.close()

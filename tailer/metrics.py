"""Prometheus metrics of one qc-tail process, kept in a registry of its own."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tailer.reader import Batch

OUTCOMES = ("ok", "retried", "failed", "auth", "throttled")
"""Of one HTTP attempt to the API: ``retried`` is a transient failure (5xx, a reset, a
timeout, a broken answer), ``failed`` an answer no retry changes (a refusal), ``auth``
refused credentials, ``throttled`` a 429."""


class Tally:
    """The lines delivered to each output, for the stop summary: what a process that serves
    no metrics keeps. Its other methods are where ``Metrics`` records its series."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delivered: dict[str, int] = {}

    def outputs(self, names: Iterable[str]) -> None:
        """Declare the outputs, so that each has its count (at 0) from the start."""
        with self._lock:
            for name in names:
                self._delivered.setdefault(name, 0)

    def writing(self, output: str, lines: int) -> None:
        """``lines`` read are being written to ``output``, not yet durable."""

    def delivered(self, output: str, lines: int) -> None:
        """``output`` has ``lines`` more, durably."""
        with self._lock:
            self._delivered[output] = self._delivered.get(output, 0) + lines

    def batches(self, group: Sequence[Batch], *, gaps: bool) -> None:
        """Delivered batches: when each project last had lines, and (``gaps``) the gaps."""

    def forget(self, project_id: int) -> None:
        """The project is no longer followed."""

    def period(self, project_id: int, name: str, seconds: float | None) -> None:
        """The project's learned publishing period; None: it has none."""

    def request(self, endpoint: str, outcome: str) -> None:
        """An HTTP attempt to the API ended so (one of ``OUTCOMES``)."""

    def exported(self) -> None:
        """A call to /live/export/logs was made."""

    def deployments(self, count: int) -> None:
        """``count`` deployments are followed now."""

    def lines_by_output(self) -> dict[str, int]:
        """Lines delivered to each output since the start."""
        with self._lock:
            return dict(self._delivered)


class Metrics(Tally):
    """What an operator alerts on, under stable names.

    Per-project series (``qc_tail_last_line_timestamp_seconds``) exist only while the
    project is followed (``forget`` removes them), so the scrape stays small however many
    deployments come and go.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        # Imported here: a process that serves no metrics starts without it.
        from prometheus_client import CollectorRegistry, Counter, Gauge

        super().__init__()
        self._clock = clock
        self.registry = CollectorRegistry()
        r = self.registry
        self._lines = Counter(
            "qc_tail_lines", "Lines delivered, per output", ["output"], registry=r
        )
        self._gap_lines = Counter(
            "qc_tail_gap_lines", "Lines reported lost (trimmed before read)", registry=r
        )
        self._gaps = Counter("qc_tail_gaps", "Gaps reported (events)", registry=r)
        self._requests = Counter(
            "qc_tail_api_requests",
            "HTTP attempts to the QuantConnect API, by endpoint and outcome",
            ["endpoint", "outcome"],
            registry=r,
        )
        self._deployments = Gauge("qc_tail_deployments", "Deployments followed now", registry=r)
        self._last_line = Gauge(
            "qc_tail_last_line_timestamp_seconds",
            "Wall time (Unix seconds) when the project's last new line was delivered",
            ["project_id", "name"],
            registry=r,
        )
        self._lag = Gauge(
            "qc_tail_output_lag_lines",
            "Lines read from the API but not yet durable in the output",
            ["output"],
            registry=r,
        )
        self._exports = Counter("qc_tail_export_calls", "Calls to /live/export/logs", registry=r)
        self._period = Gauge(
            "qc_tail_publish_period_seconds",
            "The project's learned publishing period, while its polls follow it",
            ["project_id", "name"],
            registry=r,
        )
        self._periods: dict[int, str] = {}  # the name label of each project's period series
        self._names: dict[int, str] = {}  # the name label of each project's series

    def outputs(self, names: Iterable[str]) -> None:
        names = list(names)
        super().outputs(names)
        for name in names:
            self._lines.labels(name)
            self._lag.labels(name).set(0)

    def writing(self, output: str, lines: int) -> None:
        self._lag.labels(output).set(lines)

    def delivered(self, output: str, lines: int) -> None:
        self._lag.labels(output).set(0)
        if lines:
            self._lines.labels(output).inc(lines)
        super().delivered(output, lines)

    def batches(self, group: Sequence[Batch], *, gaps: bool) -> None:
        now = self._clock()
        for batch in group:
            if batch.run is not None and batch.count:
                self._seen(batch.run.project_id, batch.run.name, now)
            if gaps and batch.gap is not None:
                self._gaps.inc()
                if batch.gap.lost:
                    self._gap_lines.inc(batch.gap.lost)

    def _seen(self, project_id: int, name: str, now: float) -> None:
        with self._lock:
            old = self._names.get(project_id)
            self._names[project_id] = name
        if old is not None and old != name:  # one series per project, whatever its name
            self._remove_last_line(project_id, old)
        self._last_line.labels(str(project_id), name).set(now)

    def forget(self, project_id: int) -> None:
        """The project's series go."""
        with self._lock:
            name = self._names.pop(project_id, None)
        if name is not None:
            self._remove_last_line(project_id, name)
        self.period(project_id, "", None)

    def period(self, project_id: int, name: str, seconds: float | None) -> None:
        """The project's period series is set (or goes)."""
        with self._lock:
            old = self._periods.pop(project_id, None)
            if seconds is not None:
                self._periods[project_id] = name
        if old is not None and (seconds is None or old != name):
            with contextlib.suppress(KeyError):  # another thread removed it first
                self._period.remove(str(project_id), old)
        if seconds is not None:
            self._period.labels(str(project_id), name).set(seconds)

    def _remove_last_line(self, project_id: int, name: str) -> None:
        with contextlib.suppress(KeyError):  # another thread removed it first
            self._last_line.remove(str(project_id), name)

    def request(self, endpoint: str, outcome: str) -> None:
        self._requests.labels(endpoint, outcome).inc()

    def exported(self) -> None:
        self._exports.inc()

    def deployments(self, count: int) -> None:
        self._deployments.set(count)

"""Grafana Loki: JSON pushes whose timestamps are deterministic, so a re-push is the same entry."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import structlog

from tailer.config import LokiConfig
from tailer.cursor import Cursor
from tailer.errors import OutputError, TransientError
from tailer.http import HttpClient, HttpError
from tailer.records import Line, expand, line_time
from tailer.retry import RetryPolicy, Sleep, parse_retry_after, transient_retrying
from tailer.sinks import Record

log = structlog.get_logger(__name__)

NS = 1_000_000_000
PUSH_TIMEOUT = 15.0
Key = tuple[int, str]


class LokiSink:
    """Pushes lines to ``/loki/api/v1/push``, one stream per deployment.

    A line's timestamp is its own second (in the algorithm's time zone; a line without one
    takes the previous line's, the first lines their deployment's launch) plus its position
    in the deployment as nanoseconds, never less than the previous entry's plus one. The
    previous timestamp is saved with the cursor, so after a crash the same lines get the same
    timestamps and Loki drops the repeats. 429, 5xx and network errors are retried, then
    raise OutputError (the cursor stays); any other refusal is logged with Loki's reason,
    counted in ``dropped``, and not retried forever.
    """

    def __init__(
        self,
        config: LokiConfig,
        *,
        http: HttpClient | None = None,
        policy: RetryPolicy | None = None,
        sleep: Sleep = time.sleep,
        clock: Any = time.time,
    ) -> None:
        self.config = config
        self.labels = {"job": "qc-tail", **dict(config.labels)}
        self.zone = ZoneInfo(config.timezone)
        self.http = http or HttpClient(pool_size=1)
        # Brief: a longer outage is the scheduler's to wait out, so other outputs keep flowing.
        self.policy = policy or RetryPolicy(max_attempts=3, base=0.2, cap=1.0, retry_after_cap=1.0)
        self._sleep = sleep
        self._clock = clock
        self._committed: dict[Key, int] = {}  # last timestamp Loki has, per deployment
        self._pending: dict[Key, int] = {}
        self._streams: dict[Key, tuple[dict[str, str], list[list[str]]]] = {}
        self.dropped = 0
        self.pushes = 0

    def recover(self, cursors: Iterable[Cursor]) -> None:
        for cursor in cursors:
            if cursor.last_ns is not None:
                self._committed[(cursor.project_id, cursor.deploy_id)] = cursor.last_ns

    def stamp(self, cursor: Cursor) -> Cursor:
        key = (cursor.project_id, cursor.deploy_id)
        last = self._committed.pop(key, None) if cursor.done else self._committed.get(key)
        return cursor if last is None else replace(cursor, last_ns=last)  # done: forgotten

    def write(self, records: Sequence[Record]) -> None:
        lines = [record for record in expand(records) if isinstance(record, Line)]
        for index, line in enumerate(lines):
            key = (line.project_id, line.deploy_id)
            ns = self._timestamp(line, lines, index)
            self._pending[key] = ns
            stream = self._streams.get(key)
            if stream is None:
                stream = self._streams[key] = (self._stream_labels(line), [])
            stream[1].append([str(ns), line.text])

    def flush(self) -> None:
        if not self._streams:
            return
        try:
            for body, count in self._bodies():
                self._push(body, count)
        except OutputError:
            self._pending.clear()
            raise
        finally:
            self._streams.clear()
        self._committed.update(self._pending)
        self._pending.clear()

    def close(self) -> None:
        self.http.close()

    # -- timestamps -------------------------------------------------------------------------

    def _timestamp(self, line: Line, lines: Sequence[Line], index: int) -> int:
        key = (line.project_id, line.deploy_id)
        previous = self._pending.get(key, self._committed.get(key))
        seconds = self._seconds(line.text)
        if seconds is None:
            if previous is not None:
                seconds = previous // NS
            elif line.launched is not None:
                seconds = int(line.launched)
            else:  # no launch time known: the next stamped line of this write, or now
                later = (self._seconds(other.text) for other in lines[index + 1 :])
                seconds = next((s for s in later if s is not None), int(self._clock()))
        ns = seconds * NS + line.position % NS
        return ns if previous is None or ns > previous else previous + 1

    def _seconds(self, text: str) -> int | None:
        stamp = line_time(text)
        if stamp is None:
            return None
        return int(datetime.timestamp(stamp.replace(tzinfo=self.zone)))

    def _stream_labels(self, line: Line) -> dict[str, str]:
        return {
            **self.labels,
            "project_id": str(line.project_id),
            "deploy_id": line.deploy_id,
            "name": line.name,
        }

    # -- pushing ----------------------------------------------------------------------------

    def _bodies(self) -> Iterable[tuple[bytes, int]]:
        """JSON bodies of at most about ``batch_size`` bytes, streams in arrival order."""
        streams: list[dict[str, Any]] = []
        size = count = 0
        for labels, values in self._streams.values():
            current: list[list[str]] = []
            streams.append({"stream": labels, "values": current})
            for value in values:
                if size and size + len(value[1]) + 32 > self.config.batch_size:
                    yield json.dumps({"streams": streams}).encode(), count
                    current = []
                    streams = [{"stream": labels, "values": current}]
                    size = count = 0
                current.append(value)
                size += len(value[1]) + 32
                count += 1
        if count:
            yield json.dumps({"streams": streams}).encode(), count

    def _push(self, body: bytes, count: int) -> None:
        retrying = transient_retrying(self.policy, sleep=self._sleep)
        try:
            retrying(self._post, body, count)
        except TransientError as exc:
            error = OutputError(f"Loki at {self.config.url}: {exc}; will retry")
            error.retry_after = exc.retry_after
            raise error from None

    def _post(self, body: bytes, count: int) -> None:
        headers = {"Content-Type": "application/json"}
        if len(body) > 1024:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        if self.config.tenant_id:
            headers["X-Scope-OrgID"] = self.config.tenant_id
        if self.config.bearer_token:
            headers["Authorization"] = f"Bearer {self.config.bearer_token}"
        auth = None
        if self.config.username is not None and self.config.password is not None:
            auth = (self.config.username, self.config.password)
        try:
            response = self.http.post(
                self.config.url, body, headers, timeout=PUSH_TIMEOUT, auth=auth
            )
        except HttpError as exc:
            raise TransientError(str(exc)) from None
        self.pushes += 1
        status = response.status
        if 200 <= status < 300:
            return
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.header("Retry-After"))
            raise TransientError(f"HTTP {status}", status=status, retry_after=retry_after)
        self.dropped += count
        log.error(
            "loki_rejected",
            status=status,
            reason=response.body[:4096].decode("utf-8", "replace").strip()[:300],
            entries=count,
            dropped_total=self.dropped,
            hint="not retried: Loki refused these entries (see its reason)",
        )

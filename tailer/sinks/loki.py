"""Grafana Loki: JSON pushes whose timestamps are deterministic, so a re-push is the same entry."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from tailer import logs
from tailer.config import LokiConfig
from tailer.cursor import Cursor, MarkError
from tailer.errors import OutputError, TransientError
from tailer.http import HttpClient
from tailer.records import Line, expand, line_time
from tailer.redaction import credentials_in
from tailer.retry import RetryPolicy, Sleep
from tailer.sinks import Record
from tailer.sinks.loki_endpoint import Endpoint
from tailer.sinks.loki_push import PUSH_TIMEOUT, LokiPush, Stream, basic_auth, headers
from tailer.sinks.loki_query import LokiQuery
from tailer.sinks.loki_refusal import Refused

log = logs.get_logger(__name__)

LOKI = "loki"
"""The name of the Loki output's mark in a cursor."""
NS = 1_000_000_000
MAX_LINE_BYTES = 262_144  # Loki's default max_line_size; a longer line is refused
TRUNCATED = " [qc-tail: truncated from {size} bytes]"
Key = tuple[int, str]


class LokiSink:
    """Pushes lines to ``/loki/api/v1/push``, one stream per deployment.

    A line's timestamp is its own second (in the algorithm's time zone; a line without one
    takes the previous line's, the first lines their deployment's launch) plus its position
    in the deployment as nanoseconds, never less than the previous entry's plus one. The
    previous timestamp is saved with the cursor, so after a crash the same lines get the same
    timestamps.

    Loki stores an entry pushed twice twice, once it left the ingester's open block (metric
    queries such as ``count_over_time`` count the copy). So a stream's first push in this
    process, and any push after a failed one, first asks Loki for the newest entry it holds
    in the push's span and sends only what comes after it: pushes go out in order, so what
    Loki holds of a stream is a prefix of what was pushed. Where queries are refused (a
    push-only endpoint), it pushes again and says so once.

    429, 5xx, network errors and refusals other than 400 (401, 403, 404, ...) are retried,
    then raise OutputError (the cursor stays); 413 splits the push. A 400 refuses the entries
    Loki names (too old, ...), counted in ``dropped``; Loki stores the rest. A line longer
    than Loki takes is truncated, with a marker, and counted in ``truncated``.
    """

    def __init__(
        self,
        config: LokiConfig,
        *,
        http: HttpClient | None = None,
        policy: RetryPolicy | None = None,
        sleep: Sleep = time.sleep,
        clock: Any = time.time,
        timeout: float = PUSH_TIMEOUT,
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
        self._streams: dict[Key, Stream] = {}
        self._known: set[Key] = set()  # streams whose last push in this process went through
        self._queries: bool | None = None  # None: not known yet whether Loki answers them
        self._query_refused: Refused | None = None
        push = (config.url, config.username, config.password, config.bearer_token)
        query = (
            config.query_url or "",
            config.query_username,
            config.query_password,
            config.query_bearer_token,
        )

        def endpoint(
            url: str, user: str | None, password: str | None, token: str | None
        ) -> Endpoint:
            return Endpoint(
                url,
                self.http,
                self.policy,
                sleep,
                timeout,
                headers(config.tenant_id, token),
                basic_auth(user, password),
            )

        self.pusher = LokiPush(
            endpoint(*push), secrets=credentials_in(*push) + credentials_in(*query)
        )
        self.query = LokiQuery(endpoint(*query))
        self.truncated = 0
        if not config.query_url:
            self._queries = False
            _no_queries("output.loki.url does not end in /push, so no query URL follows from it")

    @property
    def dropped(self) -> int:
        """Entries Loki refused for good (too old, ...), as far as it named them."""
        return self.pusher.dropped

    @property
    def pushes(self) -> int:
        return self.pusher.pushes

    def recover(self, cursors: Iterable[Cursor]) -> None:
        for cursor in cursors:
            last = cursor.mark(LOKI).get("last_ns")
            if last is None:
                continue
            if not isinstance(last, int) or isinstance(last, bool):
                raise MarkError(cursor, LOKI)
            self._committed[(cursor.project_id, cursor.deploy_id)] = last

    def stamp(self, cursor: Cursor) -> Cursor:
        """The cursor, with the last timestamp given to its deployment's lines (``last_ns``):
        after a crash, Loki is asked what it holds from there on before anything is pushed."""
        key = (cursor.project_id, cursor.deploy_id)
        if cursor.done:
            self._known.discard(key)
        last = self._committed.pop(key, None) if cursor.done else self._committed.get(key)
        return cursor if last is None else cursor.marked(LOKI, {"last_ns": last})  # done: forgotten

    def write(self, records: Sequence[Record]) -> None:
        lines = [record for record in expand(records) if isinstance(record, Line)]
        for index, line in enumerate(lines):
            key = (line.project_id, line.deploy_id)
            ns = self._timestamp(line, lines, index)
            self._pending[key] = ns
            stream = self._streams.get(key)
            if stream is None:
                stream = self._streams[key] = (self._stream_labels(line), [])
            text = line.text
            if len(text) * 4 > MAX_LINE_BYTES:  # else it cannot be too long, however encoded
                text = self._fit(text)
            stream[1].append((ns, text))

    def flush(self) -> None:
        if not self._streams:
            return
        delivered = False
        try:
            held = self._skip_what_loki_has()
            self.pusher.push_all(self._streams.values(), self.config.batch_size)
            delivered = True
        finally:
            if delivered:
                self._known.update(key for key in self._streams if key not in held)
                self._queries_decided()
            else:  # what went out may be in Loki: ask before pushing it again
                self._known.difference_update(self._streams)
                self._pending.clear()
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

    def _fit(self, text: str) -> str:
        """The line, cut to Loki's limit with a marker saying so, if it is longer."""
        data = text.encode("utf-8", "surrogatepass")
        if len(data) <= MAX_LINE_BYTES:
            return text
        marker = TRUNCATED.format(size=len(data))
        kept = data[: MAX_LINE_BYTES - len(marker)].decode("utf-8", "ignore")  # whole chars
        self.truncated += 1
        report = log.debug if self.truncated > 1 else log.warning
        report(
            "loki_line_truncated",
            bytes=len(data),
            limit=MAX_LINE_BYTES,
            truncated_total=self.truncated,
            hint="Loki refuses longer lines; the files keep the whole line",
        )
        return kept + marker

    def _stream_labels(self, line: Line) -> dict[str, str]:
        return {
            **self.labels,
            "project_id": str(line.project_id),
            "deploy_id": line.deploy_id,
            "name": line.name,
        }

    # -- what Loki has ---------------------------------------------------------------------

    def _skip_what_loki_has(self) -> set[Key]:
        """Drop from the pending streams what Loki holds already; the streams it held whole."""
        held: set[Key] = set()
        if self._queries is False:
            return held
        for key, (labels, values) in self._streams.items():
            if key in self._known or not values:
                continue
            try:
                newest = self.query.newest(labels, values[0][0], values[-1][0])
            except Refused as exc:
                if self._queries:  # it answered before: a refusal now is waited out
                    self.pusher.refusing(exc.problem, exc.text)
                    raise OutputError(exc.problem, output=self.pusher.shown) from None
                self._query_refused = exc  # push without asking; decided once a push is taken
                return held
            except TransientError as exc:
                raise OutputError(str(exc), output=self.pusher.shown) from None
            self._queries = True
            if newest is None:
                continue
            kept = [value for value in values if value[0] > newest]
            log.info("loki_already_has", deploy=key[1], entries=len(values) - len(kept))
            values[:] = kept
            if not kept:
                held.add(key)
        return held

    def _queries_decided(self) -> None:
        """A push went through: if queries were refused meanwhile, that is how Loki is."""
        refused, self._query_refused = self._query_refused, None
        if refused is not None and self._queries is None:
            self._queries = False
            _no_queries(str(refused))


def _no_queries(reason: str) -> None:
    log.warning(
        "loki_queries_unavailable",
        reason=reason,
        hint=(
            "a group pushed again after a crash may be stored twice, and count twice in "
            "metric queries (count_over_time): let qc-tail read from Loki "
            "(output.loki.query_url and its credentials)"
        ),
    )

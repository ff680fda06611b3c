"""A fake Grafana Loki on loopback that records what it accepted, and can misbehave.

``LokiRecorder`` is a real HTTP/1.1 server. It answers ``POST /loki/api/v1/push`` (JSON) and
``GET /loki/api/v1/query_range`` (log queries) the way the real Loki single binary does, as
measured with the binary that tests/test_loki_real.py runs (where that binary is present, those
tests cover real Loki itself; this fake is for what real Loki cannot be made to do on cue,
and for machines without it):

* ``204`` with no body when every entry was accepted;
* ``400`` with a plain-text reason in Loki's words when entries were invalid: the distributor's
  (too old, too new, line too long, too many labels) grouped as ``N errors like: ...``, the
  ingester's (too far behind: over an hour behind the stream's newest entry) one by one with
  ``total ignored: N out of M``, which then hides the distributor's. The valid rest of the push
  **is stored**. A label name Loki cannot parse, or a body its JSON decoder cannot read,
  stores nothing; no ``Content-Type``, or one that is not JSON, is a 400; a push without
  streams is a 422; one of over 6 MB a 429 (the default ingestion burst);
* the label ``service_name`` is added (from ``service``, ``app``, ``name``, ... ``job``, else
  ``unknown_service``); empty label values are dropped;
* an entry identical to one the stream holds (same timestamp and line) is dropped only while it
  is the stream's last entry or still in the stream's open block (``block_bytes`` of lines, as
  Loki's ingester cuts them); otherwise it is stored again. Log queries (``entries``,
  ``lines``, ``query_range``) hide such copies; ``count`` counts them, as ``count_over_time``
  does. ``flush()`` cuts every open block, as Loki's ``/flush`` does;
* scripted or random faults on pushes (429/500/503/400, a TCP reset, a slow answer, a push
  stored whose answer is lost in a reset) and a full outage; ``refuse_queries`` makes
  ``query_range`` answer with a status of its own (a push-only endpoint: 404; no read
  permission: 403), ``refuse_pushes`` does so for pushes, ``max_body_bytes`` answers 413.

Usage::

    with LokiRecorder() as loki:
        push(loki.url, ...)
        assert loki.lines(app="qc") == [...]
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from tailer.emulator.server import CuttableServer, reset_connection

PUSH_PATH = "/loki/api/v1/push"
QUERY_PATH = "/loki/api/v1/query_range"
FAULT_KINDS = ("429", "500", "503", "400", "reset", "slow", "lost")
SERVICE_NAME_FROM = (
    *("service", "app", "application", "name", "app_kubernetes_io_name", "container"),
    *("container_name", "k8s_container_name", "component", "workload", "job"),
)
MAX_PUSH_BYTES = 6 * 1024 * 1024  # Loki's default ingestion_burst_size_mb
MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*("(?:[^"\\]|\\.)*")\s*(?:,|$)')
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
DIGITS = re.compile(r"[0-9]+")
MAX_INT64 = 2**63 - 1
MAX_RETURNED_ERRORS = 10  # Loki's ingester.max-ignored-stream-errors-returned default
RATE_LIMITED = (
    "Ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting to "
    "ingest '{lines}' lines totaling '{size}' bytes, reduce log volume or contact your Loki "
    "administrator to see if the limit can be increased"
)
NO_STREAMS = "error at least one valid stream is required for ingestion"

Labels = frozenset[tuple[str, str]]
Value = tuple[int, str, dict[str, str]]  # (ts in ns, line, structured metadata)
Batch = list[tuple[dict[str, str], list[Value]]]


class _Malformed(Exception):
    """The body is not a push request Loki's JSON decoder would read: nothing is stored."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure: ``kind`` is one of ``FAULT_KINDS``."""

    kind: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class _Entry:
    ts: int
    line: str
    metadata: Mapping[str, str]
    seq: int  # global arrival order, so sorting by ts is stable across streams


class Faults:
    """What the next pushes suffer. A script comes first; then random faults, if enabled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Fault | None] = deque()
        self._rate = 0.0
        self._kinds: tuple[str, ...] = FAULT_KINDS
        self._retry_after: float | None = None
        self._rng = random.Random(0)

    def script(self, kinds: Iterable[str | None], retry_after: float | None = None) -> None:
        """Replace the script: the next pushes get these, in order (``"ok"``/None lets one by).

        ``retry_after`` (seconds) is sent as a ``Retry-After`` header on 429 and 503.
        """
        faults = [None if k is None or k == "ok" else Fault(_kind(k), retry_after) for k in kinds]
        with self._lock:
            self._script = deque(faults)

    def random(
        self,
        rate: float,
        kinds: Iterable[str] = FAULT_KINDS,
        seed: int = 0,
        retry_after: float | None = None,
    ) -> None:
        """Each push not covered by the script fails with probability ``rate`` (0 disables)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], not {rate}")
        chosen = tuple(_kind(kind) for kind in kinds)
        if rate and not chosen:
            raise ValueError("random faults need at least one kind")
        with self._lock:
            self._rate, self._kinds, self._retry_after = rate, chosen, retry_after
            self._rng = random.Random(seed)

    def clear(self) -> None:
        """No more faults: the script is emptied and random faults are off."""
        with self._lock:
            self._script.clear()
            self._rate = 0.0

    @property
    def pending(self) -> int:
        """How many scripted entries have not been used yet."""
        with self._lock:
            return len(self._script)

    def take(self) -> Fault | None:
        """The fault for the push being handled now, if any."""
        with self._lock:
            if self._script:
                return self._script.popleft()
            if self._rate and self._rng.random() < self._rate:
                return Fault(self._rng.choice(self._kinds), self._retry_after)
            return None


def _kind(kind: str) -> str:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
    return kind


def stream_string(labels: Mapping[str, str] | Labels) -> str:
    """The labels the way Loki prints a stream in its messages: ``{a="1", b="2"}``."""
    pairs = sorted(labels.items() if isinstance(labels, Mapping) else labels)
    return "{" + ", ".join(f"{name}={json.dumps(value)}" for name, value in pairs) + "}"


def _go_time(ns: int) -> str:
    """A nanosecond timestamp roughly the way Go's ``time.Time.String`` prints it."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    try:
        moment = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"{ns}ns"
    return f"{moment}.{fraction:09d} +0000 UTC"


def _rfc3339(ns: int) -> str:
    """A timestamp the way Loki's validation messages print it: to the second, in UTC."""
    try:
        return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{ns}ns"


def _service_name(labels: Mapping[str, str]) -> str:
    return next((labels[name] for name in SERVICE_NAME_FROM if labels.get(name)), "unknown_service")


class LokiRecorder:
    """A Loki push endpoint on ``127.0.0.1:<free port>``; see the module docstring.

    Options (all keyword-only):

    * ``check_age``: apply the too-old / too-new checks (off for historical timestamps);
    * ``reject_older_than``: seconds (Loki ``reject_old_samples_max_age``, 1 week);
    * ``max_future``: seconds (Loki ``creation_grace_period``, 10 min);
    * ``max_behind``: seconds behind the newest entry of the stream before ``too_far_behind``
      (Loki: ``max_chunk_age/2`` = 3600); None disables the check;
    * ``max_line_bytes``: Loki's ``max_line_size`` "256KB", which Loki reads as 262 144 bytes;
    * ``max_labels``: Loki's ``max_label_names_per_series`` (15);
    * ``block_bytes``: the size at which a stream's open block is cut (``chunk_block_size``);
    * ``refuse_queries``: a status to answer ``query_range`` with (None: answer it);
    * ``refuse_pushes``: a status to answer every push with (None: take them), e.g. 403;
    * ``max_body_bytes``: a push body larger than this gets 413, as from a proxy in front;
    * ``require_auth``: the exact ``Authorization`` value a push must carry, else 401;
    * ``require_tenant``: a push without ``X-Scope-OrgID`` gets 401 ``no org id``;
    * ``slow_seconds``: how long the ``slow`` fault sleeps before handling the push;
    * ``clock``: wall-clock seconds, for the age checks (inject a fake clock if needed).
    """

    def __init__(
        self,
        *,
        check_age: bool = True,
        reject_older_than: float = 7 * 86400,
        max_future: float = 600,
        max_behind: float | None = 3600,
        max_line_bytes: int = 262_144,
        max_labels: int = 15,
        block_bytes: int = 262_144,
        refuse_queries: int | None = None,
        refuse_pushes: int | None = None,
        max_body_bytes: int | None = None,
        require_auth: str | None = None,
        require_tenant: bool = False,
        slow_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.check_age = check_age
        self.reject_older_than = reject_older_than
        self.max_future = max_future
        self.max_behind = max_behind
        self.max_line_bytes = max_line_bytes
        self.max_labels = max_labels
        self.block_bytes = block_bytes
        self.refuse_queries = refuse_queries
        self.refuse_pushes = refuse_pushes
        self.max_body_bytes = max_body_bytes
        self.require_auth = require_auth
        self.require_tenant = require_tenant
        self.slow_seconds = slow_seconds
        self.clock = clock
        self.faults = Faults()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._outage = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._clear()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = _Server(("127.0.0.1", 0), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="loki-recorder",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.cut_connections()
        server.server_close()
        thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The push URL: ``http://127.0.0.1:PORT/loki/api/v1/push``."""
        return self.base_url + PUSH_PATH

    # -- control -----------------------------------------------------------------------------

    def outage(self, on: bool = True) -> None:
        """While on, every push gets 503 and nothing is stored."""
        with self._lock:
            self._outage = on

    def reset(self) -> None:
        """Forget everything recorded (streams and counters); faults and options stay."""
        with self._lock:
            self._clear()

    def flush(self) -> None:
        """Cut every stream's open block, as Loki's ``POST /flush`` does: from now on an
        identical entry pushed again is stored again."""
        with self._lock:
            self._open.clear()
            self._last.clear()

    def _clear(self) -> None:
        self._streams: dict[Labels, list[_Entry]] = {}
        self._seen: dict[Labels, dict[int, set[str]]] = {}
        self._highest: dict[Labels, int] = {}
        self._open: dict[Labels, tuple[set[tuple[int, str]], list[int]]] = {}
        self._last: dict[Labels, tuple[int, str]] = {}
        self._seq = 0
        self._pushes = self._accepted = self._rejected = self._queries = 0
        self._duplicates = self._copies = self._same_ts = self._faults_injected = 0
        self._requests: list[tuple[int, int]] = []
        self._bodies: list[bytes] = []
        self._wire: list[tuple[str, int]] = []  # (Content-Encoding, bytes on the wire) per push
        self._tenants: list[str | None] = []
        self._authorizations: list[str | None] = []
        self._rejections: list[tuple[str, str]] = []

    # -- inspection (all thread-safe; each returns a snapshot) ---------------------------------

    def streams(self) -> dict[Labels, list[tuple[int, str]]]:
        """Every stream (its exact label set) with its entries in arrival order."""
        with self._lock:
            return {
                labels: [(e.ts, e.line) for e in entries]
                for labels, entries in self._streams.items()
            }

    def entries(self, **labels: str) -> list[tuple[int, str]]:
        """``(ts, line)`` of the streams whose labels include ``labels``, sorted by ts (stable),
        as a log query shows them: a stored copy of an entry is shown once."""
        return [(e.ts, e.line) for e in self._matching(labels)]

    def lines(self, **labels: str) -> list[str]:
        """The lines of ``entries``."""
        return [e.line for e in self._matching(labels)]

    def count(self, **labels: str) -> int:
        """Entries stored in the streams whose labels include ``labels``, copies included:
        what ``count_over_time`` counts."""
        wanted = set(labels.items())
        with self._lock:
            return sum(len(es) for key, es in self._streams.items() if wanted <= key)

    def metadata(self, **labels: str) -> list[tuple[int, str, dict[str, str]]]:
        """Like ``entries`` with each entry's structured metadata (``{}`` when none was sent)."""
        return [(e.ts, e.line, dict(e.metadata)) for e in self._matching(labels)]

    def wait_for_lines(self, count: int, timeout: float = 5.0, **labels: str) -> list[str]:
        """Block until at least ``count`` lines match ``labels``; raise TimeoutError if not."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = self._matching_locked(labels)
                if len(found) >= count:
                    return [e.line for e in found]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(found)} of {count} lines after {timeout} s")
                self._changed.wait(left)

    def _matching(self, labels: Mapping[str, str]) -> list[_Entry]:
        with self._lock:
            return self._matching_locked(labels)

    def _matching_locked(self, labels: Mapping[str, str]) -> list[_Entry]:
        wanted = set(labels.items())
        found = [e for key, es in self._streams.items() if wanted <= key for e in _once(es)]
        return sorted(found, key=lambda e: (e.ts, e.seq))

    def _counter(self, name: str) -> int:
        with self._lock:
            value: int = getattr(self, name)
            return value

    @property
    def pushes(self) -> int:
        """POSTs to the push path, faulted ones included."""
        return self._counter("_pushes")

    @property
    def accepted(self) -> int:
        """Entries stored (duplicates that were dropped are not counted)."""
        return self._counter("_accepted")

    @property
    def rejected(self) -> int:
        """Entries refused by validation (the ``N`` of ``total ignored: N out of M``)."""
        return self._counter("_rejected")

    @property
    def duplicates_dropped(self) -> int:
        """Entries dropped silently: the stream's last entry or its open block had the same
        (ts, line)."""
        return self._counter("_duplicates")

    @property
    def copies_stored(self) -> int:
        """Entries stored although the stream held the same (ts, line) already (out of the
        open block): log queries hide them, metric queries count them."""
        return self._counter("_copies")

    @property
    def queries(self) -> int:
        """Requests to ``query_range``."""
        return self._counter("_queries")

    @property
    def same_ts_different_line(self) -> int:
        """Entries stored next to another entry of the same stream with the same ts."""
        return self._counter("_same_ts")

    @property
    def faults_injected(self) -> int:
        """Pushes answered by a fault (scripted, random, ``slow``) or by the outage."""
        return self._counter("_faults_injected")

    @property
    def requests(self) -> list[tuple[int, int]]:
        """``(status, body size on the wire)`` per push; status 0 for a reset."""
        with self._lock:
            return list(self._requests)

    @property
    def bodies(self) -> list[bytes]:
        """The (gunzipped) body of each push, faulted ones included: compare re-pushes with it."""
        with self._lock:
            return list(self._bodies)

    @property
    def wire(self) -> list[tuple[str, int]]:
        """Each push's ``Content-Encoding`` ("" if none) and size as sent."""
        with self._lock:
            return list(self._wire)

    @property
    def tenants(self) -> list[str | None]:
        """``X-Scope-OrgID`` of each push (None when absent)."""
        with self._lock:
            return list(self._tenants)

    @property
    def authorizations(self) -> list[str | None]:
        """``Authorization`` of each push (None when absent)."""
        with self._lock:
            return list(self._authorizations)

    @property
    def rejections(self) -> list[tuple[str, str]]:
        """``(Loki reason, message)`` per refusal, e.g. ``("line_too_long", "Max entry ...")``."""
        with self._lock:
            return list(self._rejections)

    # -- the endpoint --------------------------------------------------------------------------

    def _fault(self, raw: bytes, body: bytes) -> Fault | _Reply | None:
        """Outage or the next fault; counts the push. A reply here means: answer, store nothing."""
        with self._lock:
            if self._outage:
                self._faults_injected += 1
                return _text(503, "Service Unavailable: Loki outage (injected)")
        fault = self.faults.take()
        if fault is None:
            return None
        with self._lock:
            self._faults_injected += 1
        if fault.kind in ("reset", "slow", "lost"):
            return fault
        headers: tuple[tuple[str, str], ...] = ()
        if fault.retry_after is not None and fault.kind in ("429", "503"):
            headers = (("Retry-After", f"{fault.retry_after:g}"),)
        message = {
            "429": RATE_LIMITED.format(lines=_count_lines(body), size=len(raw)),
            "500": "rpc error: code = Internal desc = internal server error (injected)",
            "503": "Service Unavailable (injected)",
            "400": "fault injected: 400 Bad Request",
        }[fault.kind]
        return _text(int(fault.kind), message, headers)

    def _preflight(self, headers: Any, raw: bytes) -> tuple[_Reply | None, bytes]:
        """Auth, tenant, content type and encoding: a reply to refuse with, else the JSON bytes."""
        authorization = headers.get("Authorization")
        if self.require_auth is not None and authorization != self.require_auth:
            scheme = self.require_auth.split(" ", 1)[0] or "Bearer"
            challenge = (("WWW-Authenticate", f'{scheme} realm="loki"'),)
            return _text(401, "Unauthorized", challenge), raw
        if self.require_tenant and not headers.get("X-Scope-OrgID"):
            return _text(401, "no org id"), raw
        content_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if not content_type:
            return _text(400, "mime: no media type"), raw
        if content_type != "application/json":  # Loki reads anything else as snappy protobuf
            return _text(400, "snappy: corrupt input"), raw
        encoding = (headers.get("Content-Encoding") or "").strip().lower()
        if encoding not in ("", "identity", "gzip"):
            return _text(415, f'Content-Encoding "{encoding}" not supported'), raw
        if encoding == "gzip":
            try:
                return None, gzip.decompress(raw)
            except (OSError, EOFError, zlib.error) as error:
                return _text(400, f"gzip: invalid body: {error}"), raw
        return None, raw

    def _handle_push(self, headers: Any, raw: bytes) -> _Reply | Fault:
        """One POST to the push path; the caller has read the body already."""
        with self._lock:
            self._pushes += 1
            self._tenants.append(headers.get("X-Scope-OrgID"))
            self._authorizations.append(headers.get("Authorization"))
            self._bodies.append(decoded := _maybe_gunzip(raw, headers))
            self._wire.append(((headers.get("Content-Encoding") or "").lower(), len(raw)))
        fault = self._fault(raw, decoded)
        if isinstance(fault, _Reply) or (fault is not None and fault.kind == "reset"):
            return fault
        if fault is not None and fault.kind == "slow":  # then handle normally
            time.sleep(self.slow_seconds)
        reply = self._accept(headers, raw)
        return fault if fault is not None and fault.kind == "lost" else reply

    def _accept(self, headers: Any, raw: bytes) -> _Reply:
        if self.refuse_pushes is not None:
            return _text(self.refuse_pushes, HTTPStatus(self.refuse_pushes).phrase)
        if self.max_body_bytes is not None and len(raw) > self.max_body_bytes:
            return _text(413, "413 Request Entity Too Large")
        refusal, body = self._preflight(headers, raw)
        if refusal is not None:
            return refusal
        try:
            streams = _decode(body)
        except _Malformed as error:
            return _text(400, str(error))
        if not streams:
            return _text(422, NO_STREAMS)
        if sum(len(line) for _, values in streams for _, line, _ in values) > MAX_PUSH_BYTES:
            size = len(body)
            return _text(429, RATE_LIMITED.format(lines=_count_lines(body), size=size))
        for labels, _ in streams:
            if problem := _unparsable(labels):
                return _text(400, f"couldn't parse labels: {problem}")
        return self._ingest(streams)

    def _ingest(self, streams: Batch) -> _Reply:
        now_ns = int(self.clock() * 1e9)
        oldest = now_ns - int(self.reject_older_than * 1e9)
        newest = now_ns + int(self.max_future * 1e9)
        refused: dict[tuple[str, str], list[str]] = {}  # (reason, stream) -> messages
        behind: list[tuple[str, list[str], int]] = []  # (stream, messages, entries it got)
        with self._changed:
            for labels, values in streams:
                labels = {name: value for name, value in labels.items() if value}
                names = len(labels)
                labels["service_name"] = labels.get("service_name") or _service_name(labels)
                shown = stream_string(labels)
                if names > self.max_labels:
                    message = f"entry for stream '{shown}' has {names} label names; "
                    refused.setdefault(("max_label_names_per_series", shown), []).extend(
                        [message + f"limit {self.max_labels}"] * len(values)
                    )
                    continue
                key: Labels = frozenset(labels.items())
                valid = []
                for ts, line, metadata in values:
                    problem = self._entry_problem(shown, ts, line, oldest, newest)
                    if problem is None:
                        valid.append((ts, line, metadata))
                    else:
                        refused.setdefault((problem[0], shown), []).append(problem[1])
                ignored = []
                for ts, line, metadata in valid:  # in order: each stored one moves the newest
                    if (too_far := self._too_far(key, ts)) is None:
                        self._store(key, ts, line, metadata)
                    else:
                        ignored.append(too_far)
                if ignored:
                    behind.append((shown, ignored, len(valid)))
            self._rejected += sum(map(len, refused.values())) + sum(len(i) for _, i, _ in behind)
            self._rejections.extend((reason, ms[0]) for (reason, _), ms in refused.items())
            self._rejections.extend(("too_far_behind", ms[0]) for _, ms, _ in behind)
            self._changed.notify_all()
        if behind:  # the ingester's answer: it hides what the distributor refused
            return _text(400, _ingester_message(behind))
        if refused:
            return _text(400, "; ".join(_grouped(ms) for ms in refused.values()))
        return _Reply(204)

    def _entry_problem(
        self, shown: str, ts: int, line: str, oldest: int, newest: int
    ) -> tuple[str, str] | None:
        if self.check_age and ts < oldest:
            return "greater_than_max_sample_age", (
                f"entry for stream '{shown}' has timestamp too old: {_rfc3339(ts)}, "
                f"oldest acceptable timestamp is: {_rfc3339(oldest)}"
            )
        if self.check_age and ts > newest:
            return "too_far_in_future", (
                f"entry for stream '{shown}' has timestamp too new: {_rfc3339(ts)}"
            )
        size = len(line.encode("utf-8", "surrogatepass"))
        if size > self.max_line_bytes:
            return "line_too_long", (
                f"max entry size '{self.max_line_bytes}' bytes exceeded for stream '{shown}' "
                f"while adding an entry with length '{size}' bytes"
            )
        return None

    def _too_far(self, key: Labels, ts: int) -> str | None:
        highest = self._highest.get(key)
        if self.max_behind is None or highest is None:
            return None
        cutoff = highest - int(self.max_behind * 1e9)
        if ts >= cutoff:
            return None
        return (
            f"entry with timestamp {_go_time(ts)} ignored, reason: 'entry too far behind, "
            f"entry timestamp is: {_rfc3339(ts)}, oldest acceptable timestamp is: "
            f"{_rfc3339(cutoff)}',"
        )

    def _store(self, key: Labels, ts: int, line: str, metadata: dict[str, str]) -> None:
        """Store one valid entry, unless the stream's last entry or its open block is the same
        (ts, line); a copy of an older entry is stored again."""
        block, size = self._open.setdefault(key, (set(), [0]))
        if self._last.get(key) == (ts, line) or (ts, line) in block:
            self._duplicates += 1
            return
        at_ts = self._seen.setdefault(key, {}).setdefault(ts, set())
        if line in at_ts:
            self._copies += 1
        elif at_ts:
            self._same_ts += 1
        at_ts.add(line)
        self._seq += 1
        self._streams.setdefault(key, []).append(_Entry(ts, line, metadata, self._seq))
        self._highest[key] = max(ts, self._highest.get(key, ts))
        self._last[key] = (ts, line)
        self._accepted += 1
        block.add((ts, line))
        size[0] += len(line)
        if size[0] >= self.block_bytes:
            del self._open[key]

    # -- the query endpoint ---------------------------------------------------------------

    def _handle_query(self, headers: Any, query: Mapping[str, list[str]]) -> _Reply:
        """``GET query_range`` for a stream selector of ``=`` matchers (a log query)."""
        with self._lock:
            self._queries += 1
            if self._outage:
                return _text(503, "Service Unavailable: Loki outage (injected)")
        if self.require_auth is not None and headers.get("Authorization") != self.require_auth:
            return _text(401, "Unauthorized")
        if self.require_tenant and not headers.get("X-Scope-OrgID"):
            return _text(401, "no org id")
        if self.refuse_queries is not None:
            return _text(self.refuse_queries, HTTPStatus(self.refuse_queries).phrase)
        try:
            wanted = _selector(query.get("query", [""])[0])
            start = int(query.get("start", ["0"])[0])
            end = int(query.get("end", [str(MAX_INT64)])[0])
            limit = int(query.get("limit", ["100"])[0])
        except ValueError as error:
            return _text(400, f"parse error: {error}")
        backward = query.get("direction", ["backward"])[0] == "backward"
        with self._lock:
            found = [
                (e, key)
                for key, es in self._streams.items()
                if wanted <= key
                for e in _once(es)
                if start <= e.ts < end
            ]
        found.sort(key=lambda pair: (pair[0].ts, pair[0].seq), reverse=backward)
        result: dict[Labels, list[list[str]]] = {}
        for entry, key in found[:limit]:
            result.setdefault(key, []).append([str(entry.ts), entry.line])
        streams = [{"stream": dict(key), "values": values} for key, values in result.items()]
        answer = {"status": "success", "data": {"resultType": "streams", "result": streams}}
        headers = (("Content-Type", "application/json; charset=UTF-8"),)
        return _Reply(200, json.dumps(answer).encode(), headers)

    def _record(self, status: int, size: int) -> None:
        with self._lock:
            self._requests.append((status, size))


def _once(entries: list[_Entry]) -> Iterator[_Entry]:
    """The entries of one stream with stored copies left out, as a log query shows them."""
    seen: set[tuple[int, str]] = set()
    for entry in entries:
        if (entry.ts, entry.line) not in seen:
            seen.add((entry.ts, entry.line))
            yield entry


def _grouped(messages: list[str]) -> str:
    """Refusals of one reason in one stream, the way Loki's distributor reports them."""
    return messages[0] if len(messages) == 1 else f"{len(messages)} errors like: {messages[0]}"


def _ingester_message(behind: list[tuple[str, list[str], int]]) -> str:
    parts = []
    for shown, messages, total in behind:
        lines = "\n".join(messages[:MAX_RETURNED_ERRORS])
        parts.append(
            f"{lines}\nuser 'fake', total ignored: {len(messages)} out of {total} "
            f"for stream: {shown}"
        )
    return "\n".join(parts)


def _unparsable(labels: Mapping[str, str]) -> str | None:
    """Why Loki's label parser would refuse these label names, if it would."""
    for name in labels:
        if not LABEL_NAME.fullmatch(name):
            odd = (c for c in name if not (c.isascii() and (c.isalnum() or c == "_")))
            bad = name[0] if name[:1].isdigit() else next(odd, "=")
            return f"parse error: unexpected character inside braces: {bad!r}"
    return None


def _selector(query: str) -> Labels:
    """The ``=`` matchers of a LogQL stream selector ``{a="x", b="y"}``."""
    inner = query.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        raise ValueError(f"not a stream selector: {query!r}")
    inner = inner[1:-1].strip()
    pairs = []
    while inner:
        match = MATCHER.match(inner)
        if match is None:
            raise ValueError(f"not a stream selector: {query!r}")
        pairs.append((match[1], json.loads(match[2])))
        inner = inner[match.end() :].strip()
    if not pairs:
        raise ValueError("queries require at least one regexp or equality matcher")
    return frozenset(pairs)


def _text(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> _Reply:
    """A plain-text answer the way Loki writes errors (Go's ``http.Error``: one line + \\n)."""
    extra = (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))
    return _Reply(status, (message + "\n").encode(), extra + headers)


def _count_lines(body: bytes) -> int:
    """How many entries a push body carries, for the 429 message (0 if it cannot be read)."""
    try:
        return sum(len(values) for _, values in _decode(body))
    except _Malformed:
        return 0


def _maybe_gunzip(raw: bytes, headers: Any) -> bytes:
    if (headers.get("Content-Encoding") or "").strip().lower() == "gzip":
        with contextlib.suppress(OSError, EOFError, zlib.error):
            return gzip.decompress(raw)
    return raw


def _decode(body: bytes) -> Batch:
    """Parse the JSON push body; anything Loki's decoder would choke on raises ``_Malformed``."""
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise _Malformed(f"error parsing push request: invalid JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("streams"), list):
        raise _Malformed('error parsing push request: body must be {"streams": [...]}')
    streams: Batch = []
    for i, stream in enumerate(document["streams"]):
        where = f"streams[{i}]"
        if not isinstance(stream, dict):
            raise _Malformed(f"error parsing push request: {where} is not an object")
        labels = stream.get("stream")
        if not isinstance(labels, dict):
            raise _Malformed(
                f"error parsing push request: {where}.stream (an object of labels) is missing"
            )
        for name, value in labels.items():
            if not isinstance(value, str):
                raise _Malformed(
                    f"error parsing push request: invalid labels: {where}.stream.{name} "
                    f"is {type(value).__name__}, not a string"
                )
        values = stream.get("values")
        if not isinstance(values, list):
            raise _Malformed(f"error parsing push request: {where}.values (an array) is missing")
        streams.append((labels, [_value(f"{where}.values[{j}]", v) for j, v in enumerate(values)]))
    return streams


def _value(where: str, value: object) -> Value:
    shape = '["<unix epoch in nanoseconds>", "<log line>"(, {structured metadata})]'
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise _Malformed(f"error parsing push request: {where} must be {shape}")
    ts, line, *rest = value
    if not isinstance(ts, str) or not DIGITS.fullmatch(ts) or int(ts) > MAX_INT64:
        raise _Malformed(
            f"error parsing push request: {where}: timestamp {json.dumps(ts)} is not "
            "a string of nanoseconds since the epoch"
        )
    if not isinstance(line, str):
        raise _Malformed(f"error parsing push request: {where}: the log line must be a string")
    metadata = rest[0] if rest else {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Malformed(
            f"error parsing push request: {where}: structured metadata must be an object "
            "of string values"
        )
    return int(ts), line, metadata


class _Handler(BaseHTTPRequestHandler):
    """One kept-alive connection; every answer leaves in a single write."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        self._serve(post=True)

    def do_GET(self) -> None:
        self._serve(post=False)

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _serve(self, *, post: bool) -> None:
        raw = self._read_body()
        if raw is None:
            self._send(_text(400, "bad request body framing"))
            return
        parts = urlsplit(self.path)
        recorder = self.server.recorder
        if parts.path == QUERY_PATH and self.command == "GET":
            self._send(recorder._handle_query(self.headers, parse_qs(parts.query)))
            return
        if parts.path != PUSH_PATH:
            self._send(_text(404, "404 page not found"))
            return
        if not post:
            self._send(_text(405, "405 method not allowed", (("Allow", "POST"),)))
            return
        reply = recorder._handle_push(self.headers, raw)
        if isinstance(reply, Fault):  # reset: no answer at all
            recorder._record(0, len(raw))
            self._reset()
            return
        recorder._record(reply.status, len(raw))
        self._send(reply)

    def _read_body(self) -> bytes | None:
        """The request body (Content-Length or chunked); None when the framing is broken."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(1024)
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    return None
                if size == 0:
                    while self.rfile.readline(1024).strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(16)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, reply: _Reply) -> None:
        phrase = HTTPStatus(reply.status).phrase
        head = [f"{self.protocol_version} {reply.status} {phrase}", "Server: loki-recorder"]
        head.append(f"Date: {self.date_time_string()}")
        if reply.status != 204:
            head.append(f"Content-Length: {len(reply.body)}")
        head.extend(f"{name}: {value}" for name, value in reply.headers)
        if self.close_connection:
            head.append("Connection: close")
        body = b"" if reply.status == 204 or self.command == "HEAD" else reply.body
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def _reset(self) -> None:
        reset_connection(self)


class _Server(CuttableServer):
    """The recorder's server: its handler stores pushes in ``recorder``."""

    def __init__(self, address: tuple[str, int], recorder: LokiRecorder) -> None:
        self.recorder = recorder
        super().__init__(address, _Handler)

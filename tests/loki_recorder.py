"""A fake Grafana Loki push endpoint on loopback that records what it accepted.

``LokiRecorder`` is a real HTTP/1.1 server. As far as a client can tell it behaves like
``POST /loki/api/v1/push`` with a JSON body (see tailers-research.md §2.14 and
reliability-research.md A18/B3):

* ``204`` with no body when every entry was accepted;
* ``400`` with a plain-text reason in Loki's words when something was invalid. Per-stream
  problems (labels) and per-entry problems (age, line size) reject only what is wrong: the rest
  of the batch **is stored**, and the body ends with ``total ignored: N out of M``. A body Loki's
  JSON decoder could not read at all (wrong shape, a bad timestamp string, ...) stores nothing;
* an exact duplicate ``(ts, line)`` in the same stream is dropped silently, as Loki does;
* scripted or random faults (429/500/503/400, a TCP reset, a slow answer) and a full outage.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import urlsplit

from tailer.emulator.server import CuttableServer, reset_connection

PUSH_PATH = "/loki/api/v1/push"
FAULT_KINDS = ("429", "500", "503", "400", "reset", "slow")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
DIGITS = re.compile(r"[0-9]+")
MAX_INT64 = 2**63 - 1
MAX_RETURNED_ERRORS = 10  # Loki's ingester.max-ignored-stream-errors-returned default
RATE_LIMITED = (
    "Ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting to "
    "ingest '{lines}' lines totaling '{size}' bytes, reduce log volume or contact your Loki "
    "administrator to see if the limit can be increased"
)

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


class LokiRecorder:
    """A Loki push endpoint on ``127.0.0.1:<free port>``; see the module docstring.

    Options (all keyword-only):

    * ``check_age``: apply the too-old / too-new checks (off for historical timestamps);
    * ``reject_older_than``: seconds (Loki ``reject_old_samples_max_age``, 1 week);
    * ``max_future``: seconds (Loki ``creation_grace_period``, 10 min);
    * ``max_behind``: seconds behind the newest entry of the stream before ``too_far_behind``
      (Loki: ``max_chunk_age/2`` = 3600); None (the default) disables the check;
    * ``max_line_bytes``: Loki's ``max_line_size`` "256KB", which Loki parses as 256 000 bytes;
    * ``max_labels``: Loki's ``max_label_names_per_series`` (15);
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
        max_behind: float | None = None,
        max_line_bytes: int = 256_000,
        max_labels: int = 15,
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

    def _clear(self) -> None:
        self._streams: dict[Labels, list[_Entry]] = {}
        self._seen: dict[Labels, dict[int, set[str]]] = {}
        self._highest: dict[Labels, int] = {}
        self._seq = 0
        self._pushes = self._accepted = self._rejected = 0
        self._duplicates = self._same_ts = self._faults_injected = 0
        self._requests: list[tuple[int, int]] = []
        self._bodies: list[bytes] = []
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
        """``(ts, line)`` of the streams whose labels include ``labels``, sorted by ts (stable)."""
        return [(e.ts, e.line) for e in self._matching(labels)]

    def lines(self, **labels: str) -> list[str]:
        """The lines of the streams whose labels include ``labels``, sorted by ts (stable)."""
        return [e.line for e in self._matching(labels)]

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
        found = [e for key, es in self._streams.items() if wanted <= key for e in es]
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
        """Entries dropped silently because the stream already had the same (ts, line)."""
        return self._counter("_duplicates")

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
        if fault.kind in ("reset", "slow"):
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
        if content_type != "application/json":
            shown = content_type or "(none)"
            return _text(415, f"unsupported Content-Type {shown}: only application/json"), raw
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
        fault = self._fault(raw, decoded)
        if isinstance(fault, _Reply) or (fault is not None and fault.kind == "reset"):
            return fault
        if fault is not None:  # slow: then handle normally
            time.sleep(self.slow_seconds)
        refusal, body = self._preflight(headers, raw)
        if refusal is not None:
            return refusal
        try:
            streams = _decode(body)
        except _Malformed as error:
            return _text(400, str(error))
        return self._ingest(streams)

    def _ingest(self, streams: Batch) -> _Reply:
        now_ns = int(self.clock() * 1e9)
        oldest = now_ns - int(self.reject_older_than * 1e9)
        newest = now_ns + int(self.max_future * 1e9)
        errors: list[tuple[str, str]] = []
        total = ignored = 0
        with self._changed:
            for labels, values in streams:
                total += len(values)
                shown = stream_string(labels)
                problem = self._label_problem(labels, shown)
                if problem is not None:
                    errors.append(problem)
                    ignored += len(values)
                    continue
                key: Labels = frozenset(labels.items())
                for ts, line, metadata in values:
                    problem = self._entry_problem(key, shown, ts, line, oldest, newest)
                    if problem is not None:
                        errors.append(problem)
                        ignored += 1
                        continue
                    self._store(key, ts, line, metadata)
            self._rejected += ignored
            self._rejections.extend(errors)
            self._changed.notify_all()
        if not errors:
            return _Reply(204)
        messages = [message for _, message in errors[:MAX_RETURNED_ERRORS]]
        return _text(400, ",\n".join(messages) + f",\ntotal ignored: {ignored} out of {total}")

    def _label_problem(self, labels: dict[str, str], shown: str) -> tuple[str, str] | None:
        if not labels:
            return "missing_labels", "error at least one label pair is required per stream"
        for name in labels:
            if not LABEL_NAME.fullmatch(name):
                why = f"invalid labels: label name {name!r} must match ^[a-zA-Z_][a-zA-Z0-9_]*$"
                return "invalid_labels", f"Error parsing labels '{shown}' with error: {why}"
        if len(labels) > self.max_labels:
            return "max_label_names_per_series", (
                f"entry for stream '{shown}' has {len(labels)} label names; limit {self.max_labels}"
            )
        return None

    def _entry_problem(
        self, key: Labels, shown: str, ts: int, line: str, oldest: int, newest: int
    ) -> tuple[str, str] | None:
        if self.check_age and ts < oldest:
            return "greater_than_max_sample_age", (
                f"entry for stream '{shown}' has timestamp too old: {_go_time(ts)}, "
                f"oldest acceptable timestamp is: {_go_time(oldest)}"
            )
        if self.check_age and ts > newest:
            return "too_far_in_future", (
                f"entry for stream '{shown}' has timestamp too new: {_go_time(ts)}"
            )
        size = len(line.encode("utf-8", "surrogatepass"))
        if size > self.max_line_bytes:
            return "line_too_long", (
                f"Max entry size '{self.max_line_bytes}' bytes exceeded for stream '{shown}' "
                f"while adding an entry with length '{size}' bytes"
            )
        highest = self._highest.get(key)
        if self.max_behind is not None and highest is not None:
            cutoff = highest - int(self.max_behind * 1e9)
            if ts < cutoff:
                return "too_far_behind", (
                    f"entry with timestamp {_go_time(ts)} ignored, reason: 'entry too far "
                    f"behind, oldest acceptable timestamp is: {_go_time(cutoff)}' "
                    f"for stream: {shown}"
                )
        return None

    def _store(self, key: Labels, ts: int, line: str, metadata: dict[str, str]) -> None:
        """Store one valid entry, unless the stream holds the same (ts, line) already."""
        at_ts = self._seen.setdefault(key, {}).setdefault(ts, set())
        if line in at_ts:
            self._duplicates += 1
            return
        if at_ts:
            self._same_ts += 1
        at_ts.add(line)
        self._seq += 1
        self._streams.setdefault(key, []).append(_Entry(ts, line, metadata, self._seq))
        self._highest[key] = max(ts, self._highest.get(key, ts))
        self._accepted += 1

    def _record(self, status: int, size: int) -> None:
        with self._lock:
            self._requests.append((status, size))


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
        path = urlsplit(self.path).path
        if path != PUSH_PATH:
            self._send(_text(404, "404 page not found"))
            return
        if not post:
            self._send(_text(405, "405 method not allowed", (("Allow", "POST"),)))
            return
        recorder = self.server.recorder
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

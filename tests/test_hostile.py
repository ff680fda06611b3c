"""Hostile servers and hostile names.

A loopback server answers the API's endpoints with whatever a test chooses: wrong types,
missing fields, broken HTTP, HTML error pages, redirects to another port. Whatever comes back,
the client returns a sane ``LogWindow`` or raises a ``QcTailError``; a reader never moves its
committed cursor for it; no request, and no credential, follows a redirect; no message holds a
credential. Then names from the API or the config (deploy ids, project names) are thrown at the
outputs and the cursor store: nothing lands outside its directory, and no prefix can be forged.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tempfile
import threading
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tailer.api import Deployment, LogWindow, QcApi
from tailer.auth import QcAuth
from tailer.budget import RequestBudget
from tailer.cursor import Cursor
from tailer.errors import OutputError, QcTailError
from tailer.reader import DeploymentReader
from tailer.records import Line
from tailer.retry import RetryPolicy
from tailer.sinks.files import FileSink
from tailer.sinks.stdout import StdoutSink, display_name
from tailer.store import CursorStore

from .conftest import PROJECT, TOKEN, USER_ID, qc_tail, secrets_in, trickling

DEPLOY = "L-0123456789abcdef"
LOGS_PATH = "/api/v2/live/logs/read"

# -- a server that says whatever the test wants ------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Reply:
    """An answer: status, headers and body, or ``raw`` bytes sent as they are."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    raw: bytes | None = None

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        headers = list(self.headers)
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers.append(("Content-Length", str(len(self.body))))
        headers.append(("Connection", "close"))
        head = [f"HTTP/1.1 {self.status} Hostile"]
        head += [f"{name}: {value}" for name, value in headers]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + self.body


Responder = Callable[[Seen], Reply]


@dataclass
class FakeServer:
    """ThreadingHTTPServer on 127.0.0.1:0 in a daemon thread, recording every request."""

    respond: Responder = field(default=lambda seen: Reply(404))
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                headers = {name.lower(): value for name, value in self.headers.items()}
                seen = Seen(self.command, self.path, headers, self.rfile.read(length))
                owner.seen.append(seen)
                self.close_connection = True
                self.wfile.write(owner.respond(seen).encode())  # one write: no Nagle stall

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2"

    def serve(self, respond: Responder | Reply) -> None:
        """Answer every request from now on with ``respond``; forget what was seen."""
        self.respond = respond if callable(respond) else (lambda seen: respond)
        self.seen.clear()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def qc() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[FakeServer]:
    """Another port: the target of every redirect, which should never hear from us."""
    server = FakeServer()
    yield server
    server.stop()


class FakeTime:
    """A clock and a sleep for the request budget: pauses are recorded, never slept."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def make_api(server: FakeServer, fake_time: FakeTime | None = None) -> QcApi:
    """The client under test: two attempts, no waiting, a budget that cannot hang the test."""
    fake_time = fake_time or FakeTime()
    return QcApi(
        server.base_url,
        QcAuth(USER_ID, TOKEN),
        timeout=10,
        policy=RetryPolicy(max_attempts=2, base=0, cap=0),
        sleep=lambda seconds: None,
        budget=RequestBudget(clock=fake_time.clock, sleep=fake_time.sleep),
    )


def as_json(obj: Any, status: int = 200, *, ensure_ascii: bool = True, **headers: str) -> Reply:
    text = json.dumps(obj, ensure_ascii=ensure_ascii)
    body = text.encode("utf-8", "surrogatepass")  # lone surrogates make invalid UTF-8
    pairs = (("Content-Type", "application/json"), *headers.items())
    return Reply(status, body, tuple((name.replace("_", "-"), v) for name, v in pairs))


def as_bytes(body: bytes, status: int = 200, content_type: str = "application/json") -> Reply:
    return Reply(status, body, (("Content-Type", content_type),))


def ok(**fields: Any) -> Reply:
    return as_json({"success": True, **fields})


GOOD = {"logs": ["2026-03-01 00:00:00 a", "2026-03-01 00:00:01 b"], "length": 200}
GOOD_OFFSET = {**GOOD, "deploymentOffset": 0}


def no_secrets(exc: BaseException) -> None:
    text = f"{exc}\n{exc!r}\n{exc.args!r}"
    assert TOKEN not in text
    assert secrets_in(text) == []


def checked_window(call: Callable[[], LogWindow], start: int, end: int) -> LogWindow | None:
    """Run ``call``: a sane window comes back, or a QcTailError free of secrets; nothing else."""
    try:
        window = call()
    except QcTailError as exc:
        no_secrets(exc)
        return None
    assert isinstance(window, LogWindow)
    assert type(window.logs) is tuple
    assert all(type(line) is str for line in window.logs)
    assert type(window.length) is int
    assert type(window.deployment_offset) is int
    assert 0 <= window.deployment_offset <= window.length
    assert len(window.logs) <= end - start
    return window


def strings_sent(body: Any) -> set[str]:
    """The log lines a JSON answer carried as strings (anything else is not a line)."""
    if isinstance(body, dict) and isinstance(body.get("logs"), list):
        return {item for item in body["logs"] if isinstance(item, str)}
    return set()


# -- hostile answers to /live/logs/read, one by one -----------------------------------------


def _many_headers() -> Reply:
    head = "".join(f"X-H{i}: {i}\r\n" for i in range(150))
    body = json.dumps({"success": True, **GOOD_OFFSET}).encode()
    return Reply(
        raw=f"HTTP/1.1 200 OK\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
    )


def _long_header() -> Reply:
    body = json.dumps({"success": True, **GOOD_OFFSET}).encode()
    return Reply(200, body, (("X-Long", "x" * 100_000),))


HOSTILE: dict[str, Reply] = {
    # wrong types
    "logs-a-string": ok(logs="2026-03-01 00:00:00 a", length=200, deploymentOffset=0),
    "logs-a-dict": ok(logs={"0": "a"}, length=200, deploymentOffset=0),
    "logs-with-ints": ok(logs=["a", 1, 2], length=200, deploymentOffset=0),
    "logs-with-null": ok(logs=["a", None], length=200, deploymentOffset=0),
    "logs-with-lists": ok(logs=[["a"], "b"], length=200, deploymentOffset=0),
    "logs-null": ok(logs=None, length=200, deploymentOffset=0),
    "length-a-string": ok(logs=[], length="200", deploymentOffset=0),
    "length-a-float": ok(logs=["a"], length=200.0, deploymentOffset=0),
    "length-a-fraction": ok(logs=["a"], length=200.5, deploymentOffset=0),
    "length-a-bool": ok(logs=["a"], length=True, deploymentOffset=0),
    "length-negative": ok(logs=["a"], length=-1, deploymentOffset=0),
    "length-2**64": ok(logs=["a"], length=2**64, deploymentOffset=0),
    "length-2**53": ok(logs=["a"], length=2**53, deploymentOffset=0),
    "length-NaN": ok(logs=["a"], length=float("nan"), deploymentOffset=0),
    "length-Infinity": ok(logs=["a"], length=float("inf"), deploymentOffset=0),
    "length-5000-digits": as_bytes(
        b'{"success":true,"logs":[],"deploymentOffset":0,"length":' + b"9" * 5000 + b"}"
    ),
    "offset-negative": ok(logs=["a"], length=200, deploymentOffset=-5),
    "offset-a-string": ok(logs=["a"], length=200, deploymentOffset="0"),
    "offset-a-bool": ok(logs=["a"], length=200, deploymentOffset=False),
    "offset-beyond-length": ok(logs=["a"], length=200, deploymentOffset=201),
    "offset-2**64": ok(logs=["a"], length=2**64 + 1, deploymentOffset=2**64),
    # missing fields
    "no-logs": ok(length=200, deploymentOffset=0),
    "no-length": ok(logs=["a"], deploymentOffset=0),
    "no-offset": ok(logs=["a"], length=200),
    "no-success": as_json(GOOD_OFFSET),
    "only-success": ok(),
    "success-the-string-true": as_json({**GOOD_OFFSET, "success": "true"}),
    "success-1": as_json({**GOOD_OFFSET, "success": 1}),
    "refusal-without-errors": as_json({"success": False}),
    "refusal-with-dict-errors": as_json({"success": False, "errors": [{"a": [1, None]}]}),
    "refusal-with-empty-error": as_json({"success": False, "errors": [""]}),
    "refusal-with-errors-a-string": as_json({"success": False, "errors": "nope"}),
    "refusal-with-Message-a-list": as_json({"success": False, "Message": ["a", 1]}),
    "refusal-huge-error": as_json({"success": False, "errors": ["e" * 1_000_000]}),
    # more rows than the window asked for (the window is [100, 110))
    "eleven-rows-for-ten": ok(logs=[str(i) for i in range(11)], length=200, deploymentOffset=0),
    "300-rows-for-ten": ok(logs=[str(i) for i in range(300)], length=400, deploymentOffset=0),
    # bytes and sizes
    "non-utf8": as_bytes(
        b'{"success":true,"logs":["\xff\xfe\xfa"],"length":200,"deploymentOffset":0}'
    ),
    "latin1-declared": Reply(
        200,
        '{"success":true,"logs":["caf\xe9"],"length":200,"deploymentOffset":0}'.encode("latin-1"),
        (("Content-Type", "application/json; charset=latin-1"),),
    ),
    "utf16-json": as_bytes(json.dumps({"success": True, **GOOD_OFFSET}).encode("utf-16")),
    "lone-surrogate-escape": as_bytes(
        b'{"success":true,"logs":["price \\ud83d"],"length":200,"deploymentOffset":0}'
    ),
    "raw-lone-surrogate": as_json(
        {"success": True, "logs": ["x\ud800"], "length": 200, "deploymentOffset": 0},
        ensure_ascii=False,
    ),
    "ten-megabyte-line": ok(logs=["x" * 10_000_000], length=200, deploymentOffset=0),
    "nul-and-escapes-in-lines": ok(
        logs=["a\x00b", "\x1b[2J", "c\rd"], length=200, deploymentOffset=0
    ),
    # not JSON, or not an object
    "html-200": as_bytes(b"<html><body><h1>Maintenance</h1></body></html>", 200, "text/html"),
    "html-502": as_bytes(b"<html><body>502 Bad Gateway</body></html>", 502, "text/html"),
    "empty-200": as_bytes(b"", 200),
    "whitespace-200": as_bytes(b" \r\n\t ", 200),
    "json-array": as_json([GOOD_OFFSET]),
    "json-empty-array": as_bytes(b"[]"),
    "json-null": as_bytes(b"null"),
    "json-string": as_bytes(b'"success"'),
    "json-number": as_bytes(b"1e999"),
    "truncated-json": as_bytes(b'{"success":true,"logs":["a'),
    "trailing-garbage": as_bytes(json.dumps({"success": True, **GOOD_OFFSET}).encode() + b"}{"),
    "deeply-nested-array": as_bytes(b"[" * 100_000 + b"]" * 100_000),
    "deeply-nested-logs": as_bytes(
        b'{"success":true,"length":200,"deploymentOffset":0,"logs":'
        + b"[" * 50_000
        + b"]" * 50_000
        + b"}"
    ),
    # broken HTTP
    "content-length-too-long": Reply(200, b'{"success":true}', (("Content-Length", "1000"),)),
    "content-length-garbage": Reply(200, b'{"success":true}', (("Content-Length", "abc"),)),
    "gzip-that-is-not": Reply(200, b'{"success":true}', (("Content-Encoding", "gzip"),)),
    "gzip-of-garbage": Reply(200, gzip.compress(b"\xff" * 100), (("Content-Encoding", "gzip"),)),
    "150-headers": _many_headers(),
    "100-kb-header": _long_header(),
    "not-http": Reply(raw=b"SSH-2.0-OpenSSH_9.6\r\n"),
    "bad-status-line": Reply(raw=b"HTTP/1.1 abc Broken\r\n\r\n"),
    "silence": Reply(raw=b""),
    # statuses
    "204": as_bytes(b"", 204),
    "400-text": as_bytes(b"Bad Request", 400, "text/plain"),
    "404-html": as_bytes(b"<html>Not Found</html>", 404, "text/html"),
    "418": as_bytes(b"teapot", 418, "text/plain"),
    "401": Reply(401, b"", (("WWW-Authenticate", "Basic"),)),
    "403-json": as_json({"success": False, "errors": ["Forbidden"]}, 403),
    "500-empty": as_bytes(b"", 500),
    "599": as_bytes(b"?", 599),
    "429-retry-after-nan": as_json({}, 429, Retry_After="nan"),
    "429-retry-after-negative": as_json({}, 429, Retry_After="-5"),
    "429-retry-after-past-date": as_json({}, 429, Retry_After="Wed, 21 Oct 2015 07:28:00 GMT"),
    "429-retry-after-words": as_json({}, 429, Retry_After="in a while"),
    "429-retry-after-huge": as_json({}, 429, Retry_After="99999999999999999999999"),
    "auth-refusal-in-200": as_json({"success": False, "errors": ["Hash doesn't match."]}),
    # the clock, from a hostile Date
    "date-year-9999": as_json(
        {"success": True, **GOOD_OFFSET}, Date="Fri, 31 Dec 9999 23:59:59 GMT"
    ),
    "date-year-0": as_json({"success": True, **GOOD_OFFSET}, Date="Mon, 01 Jan 0000 00:00:00 GMT"),
    "date-garbage": as_json({"success": True, **GOOD_OFFSET}, Date="yesterday, roughly"),
}


@pytest.mark.parametrize("reply", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_answer_is_a_sane_window_or_a_qc_tail_error(qc, reply):
    qc.serve(reply)
    checked_window(lambda: make_api(qc).read_logs(PROJECT, DEPLOY, 100, 110), 100, 110)
    assert qc.seen, "the request never reached the server"


def test_a_sane_answer_comes_back_exactly(qc):
    """The positive control of the above: the same server, a well-formed answer."""
    qc.serve(ok(**GOOD_OFFSET))
    window = checked_window(lambda: make_api(qc).read_logs(PROJECT, DEPLOY, 100, 110), 100, 110)
    assert window == LogWindow(tuple(GOOD["logs"]), 200, 0)
    request = qc.seen[0]
    assert request.path == LOGS_PATH
    assert json.loads(request.body)["algorithmId"] == DEPLOY


@pytest.mark.parametrize(
    ("answer", "logs"),
    [
        ({**GOOD_OFFSET}, tuple(GOOD["logs"])),  # no ``errors``
        ({"logs": None, "length": 100, "deploymentOffset": 0}, ()),  # null for no rows
        ({**GOOD_OFFSET, "errors": [], "requestId": "x", "v": {"a": [1]}}, tuple(GOOD["logs"])),
    ],
    ids=["no-errors-field", "logs-null-past-the-end", "unknown-fields"],
)
def test_answers_the_docs_do_not_describe_are_accepted(qc, answer, logs):
    qc.serve(ok(**answer))
    window = make_api(qc).read_logs(PROJECT, DEPLOY, 100, 110)
    assert window.logs == logs


def past_end_refused(length: int, error: str) -> Responder:
    """A log of ``length`` rows whose reads at or past the end are refused with ``error``."""

    def respond(seen: Seen) -> Reply:
        start = json.loads(seen.body)["startLine"]
        if start >= length:
            return as_json({"success": False, "errors": [error]})
        return ok(logs=[f"row {start}"], length=length, deploymentOffset=3)

    return respond


@pytest.mark.parametrize(
    "error",
    ["startLine 7 is out of range", "Start line exceeds the log's length", "Invalid request"],
)
def test_a_read_past_the_end_refused_in_any_words_is_no_rows(qc, error):
    """Whatever the refusal says, the numbers asked afresh (row 0) show the read was past the
    end: it answers as the API that allows it would."""
    qc.serve(past_end_refused(7, error))
    assert make_api(qc).read_logs(PROJECT, DEPLOY, 7, 256) == LogWindow((), 7, 3)


def test_a_refusal_below_the_end_stays_a_refusal(qc):
    api = make_api(qc)
    qc.serve(lambda seen: as_json({"success": False, "errors": ["Invalid request"]}))
    with pytest.raises(QcTailError, match="Invalid request"):
        api.read_logs(PROJECT, DEPLOY, 7, 256)  # row 0 refused too: nothing says "past the end"
    qc.serve(
        lambda seen: (
            ok(logs=["row 0"], length=50, deploymentOffset=0)
            if json.loads(seen.body)["startLine"] == 0
            else as_json({"success": False, "errors": ["Invalid request"]})
        )
    )
    with pytest.raises(QcTailError, match="Invalid request"):
        api.read_logs(PROJECT, DEPLOY, 7, 256)  # below the end: the refusal is real


def test_an_empty_log_refusing_even_row_0_as_out_of_range_has_no_rows(qc):
    qc.serve(lambda seen: as_json({"success": False, "errors": ["startLine out of range"]}))
    assert make_api(qc).read_logs(PROJECT, DEPLOY, 0, 249) == LogWindow((), 0, 0)


def test_a_ten_megabyte_line_arrives_whole(qc):
    qc.serve(HOSTILE["ten-megabyte-line"])
    window = make_api(qc).read_logs(PROJECT, DEPLOY, 100, 110)
    assert window.logs == ("x" * 10_000_000,)


# -- generated answers -------------------------------------------------------------------------

EDGES = [0, 1, -1, 249, 250, 2**31 - 1, 2**31, 2**53 - 1, 2**53, 2**63, 2**64, -(2**63)]
EDGES += [0.0, -0.0, 0.5, 1.0, 1e308, float("inf"), float("-inf"), float("nan"), True, False]
EDGES += ["", "0", "200", None, [], {}]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
counts = st.sampled_from(EDGES) | st.integers(-3, 600) | json_values
TAIL = [f"2026-03-01 00:00:0{i} tail {i}" for i in range(4)]
rows = st.sampled_from(TAIL) | st.text(max_size=40) | json_values
logs_values = (
    st.lists(rows, max_size=12) | st.lists(st.text(max_size=5), max_size=300) | json_values
)
answers = st.fixed_dictionaries(
    {"success": st.just(True) | json_values},
    optional={
        "logs": logs_values,
        "length": counts,
        "deploymentOffset": counts,
        "errors": json_values,
        "messages": json_values,
        "Message": json_values,
    },
)
windows = st.tuples(st.integers(0, 500), st.integers(1, 249))
statuses = st.sampled_from([200] * 6 + [201, 204, 301, 400, 401, 404, 429, 500, 502, 503])

HTTP_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@HTTP_SETTINGS
@given(answer=answers, ensure_ascii=st.booleans(), window=windows)
def test_any_json_answer_is_a_sane_window_or_a_qc_tail_error(qc, answer, ensure_ascii, window):
    start, size = window
    qc.serve(as_json(answer, ensure_ascii=ensure_ascii))
    api = make_api(qc)
    got = checked_window(
        lambda: api.read_logs(PROJECT, DEPLOY, start, start + size), start, start + size
    )
    if got is not None:
        sent = answer["logs"] if answer["logs"] is not None else []  # null: no rows
        assert got.logs == tuple(sent)  # the server's lines, not a copy of something


@HTTP_SETTINGS
@given(
    body=st.binary(max_size=300),
    status=statuses,
    content_type=st.sampled_from(
        ["application/json", "text/html", "text/plain; charset=utf-16", ""]
    ),
)
def test_any_bytes_are_a_sane_window_or_a_qc_tail_error(qc, body, status, content_type):
    qc.serve(as_bytes(body, status, content_type))
    checked_window(lambda: make_api(qc).read_logs(PROJECT, DEPLOY, 0, 249), 0, 249)


def deployment_ok(deployment: Deployment) -> None:
    assert type(deployment.deploy_id) is str and deployment.deploy_id
    assert type(deployment.status) is str
    assert deployment.project_name is None or (
        type(deployment.project_name) is str and deployment.project_name
    )
    for moment in (deployment.launched, deployment.stopped):
        assert moment is None or (isinstance(moment, datetime) and moment.tzinfo is not None)
        if moment is not None:
            moment.timestamp()  # what the follower does with it
    deployment.terminal  # noqa: B018 - must not raise


times = (
    st.sampled_from(
        [
            "2026-03-01 00:00:00",
            "2026-03-01T00:00:00Z",
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-23:59",
            "9999-12-31 23:59:59",
            "2026-02-30 00:00:00",
            "Z",
            "",
            "\x00",
            "\ud800",
        ]
    )
    | json_values
)
live_answers = st.fixed_dictionaries(
    {"success": st.just(True) | json_values},
    optional={
        "deployId": st.sampled_from([DEPLOY, "", "../../etc", "\x00"]) | json_values,
        "status": st.sampled_from(["Running", "Stopped", ""]) | json_values,
        "launched": times,
        "stopped": times,
        "projectName": st.text() | json_values,
        "errors": json_values,
    },
)


@HTTP_SETTINGS
@given(answer=live_answers)
def test_any_live_read_answer_is_a_sane_deployment_or_a_qc_tail_error(qc, answer):
    qc.serve(as_json(answer))
    try:
        deployment = make_api(qc).read_live(PROJECT)
    except QcTailError as exc:
        no_secrets(exc)
        return
    deployment_ok(deployment)


@HTTP_SETTINGS
@given(items=st.lists(live_answers, max_size=4) | json_values, project=counts)
def test_any_live_list_answer_is_sane_deployments_or_a_qc_tail_error(qc, items, project):
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                item["projectId"] = project
    qc.serve(ok(live=items))
    try:
        deployments = make_api(qc).list_live()
    except QcTailError as exc:
        no_secrets(exc)
        return
    for deployment in deployments:
        deployment_ok(deployment)
        assert type(deployment.project_id) is int and deployment.project_id >= 0


# -- the request budget believes no absurd Retry-After ----------------------------------------


@pytest.mark.parametrize("retry_after", ["1e9", "inf"])
def test_a_huge_retry_after_does_not_freeze_the_shared_budget(qc, retry_after):
    """The backoff caps Retry-After at ``retry_after_cap``; the shared budget must too, or one
    bogus header stops every deployment's requests for years (and ``inf`` crashes sleep)."""
    qc.serve(as_json({}, 429, Retry_After=retry_after))
    fake_time = FakeTime()
    api = make_api(qc, fake_time)
    with pytest.raises(QcTailError):
        api.read_logs(PROJECT, DEPLOY, 0, 10)
    assert len(qc.seen) == 2
    cap = api.policy.retry_after_cap
    assert all(pause <= cap + 1 for pause in fake_time.pauses), fake_time.pauses


def test_retry_after_infinity_with_the_default_budget_is_a_qc_tail_error(qc):
    qc.serve(as_json({}, 429, Retry_After="inf"))
    api = QcApi(
        qc.base_url,
        QcAuth(USER_ID, TOKEN),
        policy=RetryPolicy(max_attempts=2, base=0, cap=0),
        sleep=lambda seconds: None,
    )
    with pytest.raises(QcTailError):  # not OverflowError from time.sleep(inf)
        api.read_logs(PROJECT, DEPLOY, 0, 10)


# -- redirects: not followed, and the credentials never leave ----------------------------------

REDIRECTS = [301, 302, 303, 307, 308]


def redirect_to(target: FakeServer, status: int) -> Responder:
    def respond(seen: Seen) -> Reply:
        location = f"http://127.0.0.1:{target.port}{seen.path}"
        return Reply(status, b"", (("Location", location),))

    return respond


def assert_nothing_reached(target: FakeServer) -> None:
    assert not any("authorization" in seen.headers for seen in target.seen), "credentials leaked"
    assert target.seen == [], "a redirect was followed"


@pytest.mark.parametrize("status", REDIRECTS)
@pytest.mark.parametrize("endpoint", ["read_logs", "read_live", "list_live", "authenticate"])
def test_a_redirect_to_another_port_is_not_followed(qc, elsewhere, status, endpoint):
    qc.serve(redirect_to(elsewhere, status))
    elsewhere.serve(ok(**GOOD_OFFSET, deployId=DEPLOY, live=[]))
    api = make_api(qc)
    calls = {
        "read_logs": lambda: api.read_logs(PROJECT, DEPLOY, 0, 10),
        "read_live": lambda: api.read_live(PROJECT),
        "list_live": lambda: api.list_live(),
        "authenticate": api.authenticate,
    }
    with pytest.raises(QcTailError) as raised:
        calls[endpoint]()
    no_secrets(raised.value)
    assert len(qc.seen) >= 1
    assert "authorization" in qc.seen[0].headers  # the control: the real server got it
    assert_nothing_reached(elsewhere)


@pytest.mark.parametrize("status", REDIRECTS)
def test_a_reader_meeting_a_redirect_keeps_its_cursor_and_sends_nothing_away(qc, elsewhere, status):
    qc.serve(redirect_to(elsewhere, status))
    elsewhere.serve(ok(logs=TAIL, length=200, deploymentOffset=0))
    reader = reader_at_100(make_api(qc))
    before = reader.cursor
    with pytest.raises(QcTailError):
        reader.read()
    assert reader.cursor == before
    assert_nothing_reached(elsewhere)


# -- a reader in front of a hostile server -----------------------------------------------------


def reader_at_100(api: QcApi) -> DeploymentReader:
    """A reader that has delivered 100 lines, the last four of them ``TAIL``."""
    cursor = Cursor(PROJECT, DEPLOY, position=96).advance(TAIL)
    reader = DeploymentReader(api, cursor, "algo", offset=0)
    reader.length = 200
    return reader


def read_against(qc: FakeServer, answer: Responder | Reply, sent: set[str]) -> None:
    """One read of a reader at line 100: its cursor stays, and it yields only lines sent."""
    qc.serve(answer)
    reader = reader_at_100(make_api(qc))
    before = reader.cursor
    try:
        batch = reader.read()
    except QcTailError as exc:
        no_secrets(exc)
        batch = None
    assert reader.cursor == before, "a read moved the committed cursor"
    if batch is not None:
        for line in batch.lines:
            assert type(line.text) is str
            assert line.text in sent, f"{line.text!r} was never sent"
        assert batch.cursor.position >= before.position


def sent_in(reply: Reply) -> set[str]:
    try:
        return strings_sent(json.loads(reply.body))
    except (ValueError, RecursionError):
        return set()


@pytest.mark.parametrize("reply", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_answer_never_moves_a_readers_cursor(qc, reply):
    read_against(qc, reply, sent_in(reply))


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.generate),  # a failure here repeats a named test below
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(answers=st.lists(answers, min_size=1, max_size=6))
def test_generated_answers_never_move_a_readers_cursor(qc, answers):
    """A sequence of answers (the last one repeated), so realignment sees them change."""
    replies = [as_json(answer) for answer in answers]
    sent = set().union(*(strings_sent(answer) for answer in answers))
    count = iter(range(10**9))

    def respond(seen: Seen) -> Reply:
        return replies[min(next(count), len(replies) - 1)]

    read_against(qc, respond, sent)


def test_the_same_rows_for_every_window_do_not_recurse_forever(qc):
    """A server answering every window with the same rows, the cursor's last lines among them.

    The reader realigns (shift 95), reads again, finds a mismatch again, realigns with a shift
    of 0, and so on: ``read`` -> ``_realign`` -> ``read`` until RecursionError (~1000 requests).
    """
    read_against(qc, ok(logs=["other", *TAIL], length=200, deploymentOffset=0), {"other", *TAIL})


def test_an_answer_contradicting_its_own_length_is_not_taken_for_a_trim(qc):
    """``length`` 200 says rows 96..199 exist, yet ``logs`` is empty: a broken answer, not
    retention. Taken as a gap, it resets the cursor to the deployment's first line, and once
    the server is sane again, the 100 lines already delivered come a second time."""
    lines = [f"2026-03-01 00:00:00 line {i}" for i in range(200)]

    def sane(seen: Seen) -> Reply:
        request = json.loads(seen.body)
        return ok(
            logs=lines[request["startLine"] : request["endLine"]], length=200, deploymentOffset=0
        )

    qc.serve(ok(logs=[], length=200, deploymentOffset=0))
    api = make_api(qc)
    cursor = Cursor(PROJECT, DEPLOY, position=96).advance(lines[96:100])
    reader = DeploymentReader(api, cursor, "algo", offset=0)
    delivered = list(lines[:100])
    try:
        batch = reader.read()
    except QcTailError:
        batch = None
    if batch is not None:
        reader.commit(batch)
        delivered += [line.text for line in batch.lines]
    qc.serve(sane)
    while (batch := reader.read()) is not None:
        reader.commit(batch)
        delivered += [line.text for line in batch.lines]
    assert delivered == lines  # every line once: no duplicates after the bogus answer


# -- what the server may say that ends up in our messages --------------------------------------


def echo(status: int, shape: str) -> Responder:
    """A server (or a proxy's debug page) that repeats the request's headers back."""

    def respond(seen: Seen) -> Reply:
        dump = f"invalid Authorization header {seen.headers.get('authorization')!r}"
        if shape == "text":
            return as_bytes(dump.encode(), status, "text/plain")
        if shape == "errors":
            return as_json({"success": False, "errors": [dump]}, status)
        if shape == "length":
            return ok(logs=[], length=dump, deploymentOffset=0)
        return Reply(status, b"", (("Location", f"http://127.0.0.1:1/?{dump.replace(' ', '+')}"),))

    return respond


@pytest.mark.parametrize(
    "status, shape",
    [
        (400, "text"),
        (404, "text"),
        (500, "text"),
        (502, "text"),
        (401, "text"),
        (429, "text"),
        (200, "errors"),
        (403, "errors"),
        (200, "length"),
        (302, "location"),
    ],
)
def test_no_message_holds_the_credentials_even_when_the_server_echoes_them(qc, status, shape):
    qc.serve(echo(status, shape))
    with pytest.raises(QcTailError) as raised:
        make_api(qc).read_logs(PROJECT, DEPLOY, 0, 10)
    assert "authorization" in qc.seen[0].headers
    no_secrets(raised.value)


# -- answers that never end, and answers that never stop growing -------------------------------

TRICKLED = {
    "headers": (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 1000),
    "body": (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"{" + b" " * 999),
}


@pytest.mark.parametrize(("head", "drip"), TRICKLED.values(), ids=TRICKLED.keys())
def test_a_trickling_server_cannot_hold_a_request_past_its_timeout(head, drip):
    """A byte every 0.2 s trips no socket timeout: the request would last minutes, and every
    other deployment's poll would wait behind it. ``timeout`` bounds the whole request."""
    outcome: list[object] = []
    with trickling(head, drip) as url:
        api = QcApi(
            url.removesuffix("/x") + "/api/v2",
            QcAuth(USER_ID, TOKEN),
            timeout=1,
            policy=RetryPolicy(max_attempts=1),
        )

        def call() -> None:
            try:
                outcome.append(api.read_logs(PROJECT, DEPLOY, 0, 10))
            except QcTailError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        thread.join(timeout=60)  # a hang guard: the trickle alone lasts 200 s
        assert not thread.is_alive(), "the request outlived its timeout"
        api.close()
    (error,) = outcome
    assert isinstance(error, QcTailError)
    assert "no whole answer within the 1 s timeout" in str(error)


def _gzip_bomb(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1 << 20)
    return b"".join([*(packer.compress(zeros) for _ in range(size >> 20)), packer.flush()])


def test_a_gzip_bomb_keeps_the_cli_under_150_mb(qc, tmp_path):
    """About 300 KB inflating to 300 MB, as every answer. Each is refused at the answer cap;
    none may keep its buffer alive through the error that is retried (a traceback pins the
    frames, and the frames their locals)."""
    bomb = _gzip_bomb(300 << 20)
    assert len(bomb) < 400_000
    qc.serve(Reply(200, bomb, (("Content-Type", "application/json"), ("Content-Encoding", "gzip"))))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "QC_BASE_URL": qc.base_url,
        "QC_USER_ID": str(USER_ID),
        "QC_API_TOKEN": TOKEN,
    }
    with (tmp_path / "stderr").open("w+") as stderr:
        process = subprocess.Popen(
            qc_tail("tail", str(PROJECT), "--deploy", DEPLOY),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        deadline = time.monotonic() + 60  # a hang guard
        while len(qc.seen) < 5 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(qc.seen) >= 5, "the CLI stopped asking"  # four answers taken in, at least
        # The child's own high-water mark: wait4's ru_maxrss would count this process's pages
        # too (the child shares them between fork and exec).
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak_kb = int(
            next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]
        )
        process.terminate()
        assert process.wait(timeout=10) == 0  # a hang guard; SIGTERM is a normal end
        stderr.seek(0)
        assert "Traceback" not in stderr.read()
    assert peak_kb / 1024 < 150, f"peak RSS {peak_kb / 1024:.0f} MB"


# -- lines with lone surrogates, as JSON escapes can carry them, reach the outputs ------------


@pytest.mark.parametrize("escape", [b"\\ud83d", b"\\udc80", b"\\ud800\\ud800"])
@pytest.mark.parametrize("output", ["files", "stdout-text", "stdout-json"])
def test_a_line_with_a_lone_surrogate_is_written_or_refused_as_an_output_error(
    qc, tmp_path, escape, output
):
    """``"\\ud83d"`` is valid JSON (a truncated emoji, say) and the API passes it on as a str."""
    qc.serve(
        as_bytes(b'{"success":true,"length":1,"deploymentOffset":0,"logs":["a ' + escape + b'"]}')
    )
    window = make_api(qc).read_logs(PROJECT, DEPLOY, 0, 1)
    line = Line(PROJECT, DEPLOY, "algo", 0, 0, window.logs[0])
    if output == "files":
        sink: FileSink | StdoutSink = FileSink(tmp_path / "out")
    else:
        stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # a real stdout is strict
        sink = StdoutSink(stream, format=output.removeprefix("stdout-"), prefix=True)
    try:
        sink.write([line])
        sink.flush()
    except OutputError:
        pass
    finally:
        sink.close()


# -- hostile names: files ----------------------------------------------------------------------

NAME_PAYLOADS = [
    "../../etc/passwd",
    "..",
    ".",
    "a/../../b",
    "/etc/passwd",
    "a\x00b",
    "a\nb",
    "evil] [other",
    "\x1b[2J",
    "x" * 10_000,
    "déploiement-日本語-🚀",
    "\u202eevil",
    "",
    " ",
    "-rf",
    ".hidden",
    "con",
    "\udcff",
    "L-" + "a" * 78,
    "a" * 255,
]


def written_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_symlink() or not p.is_dir())


@settings(max_examples=150, deadline=None, database=None)
@given(
    deploy_id=st.sampled_from(NAME_PAYLOADS) | st.text(),
    project_id=st.sampled_from([0, 1, PROJECT, 2**63]) | st.integers(),
)
def test_the_file_sink_writes_only_under_its_project_directory(deploy_id, project_id):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = root / "a" / "b" / "c" / "out"  # room above it for any ../ to land in
        sink = FileSink(out)
        try:
            sink.write([Line(project_id, deploy_id, "algo", 0, 0, "hello")])
            sink.flush()
        finally:
            sink.close()
        path = sink.path(project_id, deploy_id)
        assert written_files(root) == [path]
        assert path.parent == out / str(project_id)
        assert os.path.realpath(path).startswith(os.path.realpath(out / str(project_id)) + os.sep)
        assert path.name not in {".log", "..log"} and not path.name.startswith(".")
        assert "\x00" not in path.name and len(path.name.encode()) <= 255
        assert path.read_bytes() == b"hello\n"


@pytest.mark.parametrize("deploy_id", [DEPLOY, "../../etc/passwd", "..", "a/../../b"], ids=repr)
@pytest.mark.parametrize(
    "planted",
    ["project-dir", "project-dir-dangling", "log-file", "log-file-dangling", "out-dir-entry"],
)
def test_a_symlink_planted_in_the_output_directory_is_refused(tmp_path, deploy_id, planted):
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"keep\n")
    project_dir = out / str(PROJECT)
    sink = FileSink(out)
    name = sink.path(PROJECT, deploy_id).name
    if planted.startswith("project-dir"):
        out.mkdir()
        target = outside if planted == "project-dir" else outside / "made"
        project_dir.symlink_to(target, target_is_directory=True)
    elif planted.startswith("log-file"):
        project_dir.mkdir(parents=True)
        target = outside / ("precious" if planted == "log-file" else "made.log")
        (project_dir / name).symlink_to(target)
    else:  # the output directory's own entry for the project is a link to a file outside
        out.mkdir()
        project_dir.symlink_to(outside / "precious")
    before = sorted((p.name, p.read_bytes()) for p in outside.iterdir())
    with pytest.raises(OutputError):
        sink.write([Line(PROJECT, deploy_id, "algo", 0, 0, "evil")])
        sink.flush()
    sink.close()
    assert sorted((p.name, p.read_bytes()) for p in outside.iterdir()) == before
    assert not (outside / "made").exists() and not (outside / "made.log").exists()


# -- hostile names: the stdout prefix ----------------------------------------------------------


def prefixed(records: list[Line]) -> list[str]:
    stream = io.StringIO()
    sink = StdoutSink(stream, prefix=True)
    sink.write(records)
    sink.flush()
    text = stream.getvalue()
    assert text.endswith("\n")
    return text[:-1].split("\n")


def other_line(i: int) -> Line:
    return Line(PROJECT + 1, "L-other", "other", i, i, f"from other {i}")


@settings(max_examples=200, deadline=None, database=None)
@given(
    name=st.sampled_from(NAME_PAYLOADS) | st.text(),
    deploy_id=st.sampled_from(NAME_PAYLOADS) | st.text(max_size=20),
    text=st.sampled_from(["hello", "one\ntwo", "\n", "", "x\n\ny"]),
)
def test_a_hostile_name_cannot_forge_another_deployments_prefix(name, deploy_id, text):
    records = [
        other_line(0),
        Line(PROJECT, DEPLOY, name, 0, 0, text),
        Line(PROJECT, deploy_id, name, 1, 0, text),  # a second deployment: its id is shown too
        other_line(1),
    ]
    out = prefixed(records)
    parts = text.split("\n")
    assert len(out) == 4  # one physical line per row, its line breaks escaped
    theirs = "[other] "
    assert out[0] == theirs + "from other 0" and out[-1] == theirs + "from other 1"
    ours = out[1:-1]
    label = display_name(name)
    first, second = f"[{label}] ", f"[{label} {display_name(deploy_id)[:10]}] "
    assert ours == [first + "\\n".join(parts), second + "\\n".join(parts)]
    for head in (first, second):
        assert head.count("[") == 1 and head.count("]") == 1  # the label closes only once
        assert "\n" not in head and "\r" not in head
        if name != "other":
            assert not head.startswith(theirs)


@pytest.mark.parametrize(
    "name",
    [
        "evil] [other",
        "a\nb",
        "\x1b[2J",
        "a\rb",
        "\x7f",
        "x" * 10_000,
        "\x9b2J",  # CSI, the C1 form of ESC [
        "a\x85[other] b",  # NEL, the C1 next-line
        "\x9d0;title\x9c",  # OSC ... ST: sets a terminal's title
    ],
    ids=repr,
)
def test_a_prefix_holds_no_control_characters(name):
    """``display_name`` promises no control characters; C1 ones (U+0080..U+009F, CSI and NEL
    among them) are control characters too, and a terminal may act on them."""
    head = prefixed([Line(PROJECT, DEPLOY, name, 0, 0, "hello")])[0].removesuffix("hello")
    label = head[1:-2]
    assert head == f"[{label}] "
    assert [c for c in label if unicodedata.category(c) == "Cc"] == []
    assert "[" not in label and "]" not in label
    assert 1 <= len(label) <= 64


def test_a_multi_line_text_is_one_prefixed_line():
    out = prefixed([Line(PROJECT, DEPLOY, "evil] [other", 0, 0, "a\n[other] forged\n\nb")])
    assert out == ["[evil_ _other] a\\n[other] forged\\n\\nb"]


# -- hostile names: the cursor store -----------------------------------------------------------


@settings(max_examples=150, deadline=None, database=None)
@given(deploy_id=st.sampled_from(NAME_PAYLOADS) | st.text())
def test_cursor_store_paths_stay_under_the_store_root(deploy_id):
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "x" / "y" / "state"
        store = CursorStore(state)
        path = store.path(PROJECT, deploy_id)
        assert path.parent == store.root / str(PROJECT)
        assert not path.name.startswith(".") and "\x00" not in path.name
        assert len(path.name.encode()) <= 255
        cursor = Cursor(PROJECT, deploy_id, position=3)
        store.save(cursor)
        assert written_files(Path(tmp)) == [path]
        assert os.path.realpath(path).startswith(os.path.realpath(store.root) + os.sep)
        assert store.load_all() == {(PROJECT, deploy_id): cursor}

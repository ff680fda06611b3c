"""The emulator's HTTP face: http.server, the auth check, faults on the wire, the endpoints."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tailer.config import LIST_STATUSES
from tailer.emulator.export import Export
from tailer.emulator.faults import Faults, Reply, auth_reply, fault_reply, json_reply, refusal
from tailer.emulator.lag import Lags
from tailer.emulator.model import Model, NotFound

BASE_PATH = "/api/v2"
AUTH_SHAPES = ("401", "hash", "userid", "empty500")
PAST_END = ("empty", "error")
"""What a read at or past ``length`` answers: no rows, or an out-of-range refusal."""
MAX_AGE = 7200
MAX_AHEAD = 300


@dataclass(slots=True)
class Stats:
    """What the emulator has seen; tests assert on it (``oversized_windows == 0``)."""

    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    oversized_windows: int = 0
    auth_failures: int = 0
    faults_injected: int = 0
    max_window_seen: int = 0

    def reset(self) -> None:
        self.requests = self.oversized_windows = self.auth_failures = 0
        self.faults_injected = self.max_window_seen = 0
        self.by_path.clear()


class BadRequest(Exception):
    """The request body is not what the endpoint needs; the message says which field."""


def _optional(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadRequest(f"Field {name} must be an integer")
    return value


def _required(body: dict[str, Any], name: str) -> int:
    value = _optional(body, name)
    if value is None:
        raise BadRequest(f"Missing required field: {name}")
    return value


def _required_text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"Missing required field: {name}")
    return value


class Api:
    """Everything the handler asks: the clock, the auth verdict, faults, and the answers."""

    def __init__(
        self,
        model: Model,
        faults: Faults,
        *,
        user_id: int,
        api_token: str,
        max_window: int,
        auth_failure: str,
        skew: float,
        latency: float,
        clock: Callable[[], float],
        list_ignores_project: bool = False,
        stale_read_rate: float = 0.0,
        past_end: str = "empty",
        strict_window: bool = False,
        bare_answers: bool = False,
    ) -> None:
        if auth_failure not in AUTH_SHAPES:
            raise ValueError(f"auth_failure must be one of {AUTH_SHAPES}, not {auth_failure!r}")
        if past_end not in PAST_END:
            raise ValueError(f"past_end must be one of {PAST_END}, not {past_end!r}")
        # Where the documentation is silent or has changed: each way the real API may answer.
        self.past_end = past_end
        self.strict_window = strict_window  # endLine - startLine < max_window, not <=
        self.bare_answers = bare_answers  # no ``errors``, ``logs: null``, unknown fields
        self.model, self.faults = model, faults
        self.lags = Lags()
        self.export = Export(model, clock=clock)
        self.user_id, self._token = user_id, api_token
        self.max_window, self.auth_failure = max_window, auth_failure
        self.skew, self.latency, self._clock = skew, latency, clock
        self.stats = Stats()
        self.list_ignores_project = list_ignores_project  # as the docs allow: status only
        self._stale_reads: dict[int, int] = {}  # project -> /live/read answers still stale
        self.stale_read_rate = stale_read_rate  # the share of /live/read answers that lag
        self._rng = random.Random(0)
        self._lock = threading.Lock()
        self.answering = threading.Event()
        self.answering.set()
        self.closing = threading.Event()
        self._routes: dict[str, Callable[[dict[str, Any]], Reply]] = {
            "/authenticate": lambda body: self._success({}),
            "/live/logs/read": self._logs_read,
            "/live/read": self._live_read,
            "/live/list": self._live_list,
            "/projects/read": self._projects_read,
            "/live/export/logs": self._export_logs,
        }

    def now(self) -> float:
        return self._clock() + self.skew

    def count(self, path: str, *, fault: bool = False, auth: bool = False) -> None:
        with self._lock:
            if fault:
                self.stats.faults_injected += 1
            elif auth:
                self.stats.auth_failures += 1
            else:
                self.stats.requests += 1
                self.stats.by_path[path] = self.stats.by_path.get(path, 0) + 1

    def signed(self, headers: Message) -> bool:
        """Is the request signed with our credentials and a timestamp our clock accepts?"""
        stamp = (headers.get("Timestamp") or "").strip()
        scheme, _, token = (headers.get("Authorization") or "").partition(" ")
        try:
            when, credentials = int(stamp), base64.b64decode(token, validate=True)
        except (ValueError, binascii.Error):
            return False
        now = self.now()
        if scheme.lower() != "basic" or not now - MAX_AGE <= when <= now + MAX_AHEAD:
            return False
        digest = hashlib.sha256(f"{self._token}:{stamp}".encode()).hexdigest()
        return hmac.compare_digest(credentials, f"{self.user_id}:{digest}".encode())

    def answer(self, path: str, headers: Message, raw: bytes) -> Reply:
        route = self._routes.get(path)
        if path == "/live/export/logs" and not self.export.enabled:  # an account without it
            route = None
        if route is None:
            return refusal(f"Not found: {BASE_PATH}{path}", 404)
        if not self.signed(headers):
            self.count(path, auth=True)
            return auth_reply(self.auth_failure)
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as error:
            return refusal(f"Malformed JSON body: {error}")
        try:
            if not isinstance(body, dict):
                raise BadRequest("Request body must be a JSON object")
            return route(body)
        except (BadRequest, NotFound) as error:
            return refusal(str(error))

    def _logs_read(self, body: dict[str, Any]) -> Reply:
        project = _required(body, "projectId")
        start, end = _required(body, "startLine"), _required(body, "endLine")
        deploy = _required_text(body, "algorithmId")
        refused = self._window_refused(start, end)
        if refused is not None:
            return refused
        query = body.get("query")
        if query is not None and not isinstance(query, str):
            raise BadRequest("Field query must be a string")
        behind = self.lags.take(project)
        logs, length, offset = self.model.read_logs(
            project, deploy, start, end, behind=behind, query=query
        )
        if start >= length and self.past_end == "error":
            return refusal(f"startLine {start} is out of range: the log has {length} lines")
        payload = {"logs": logs or (None if self.bare_answers else []), "length": length}
        return self._success({**payload, "deploymentOffset": offset})

    def _window_refused(self, start: int, end: int) -> Reply | None:
        """The refusal of a window out of bounds or over the page size, after counting it."""
        allowed = self.max_window - 1 if self.strict_window else self.max_window
        with self._lock:
            self.stats.max_window_seen = max(self.stats.max_window_seen, end - start)
            if end - start > allowed:
                self.stats.oversized_windows += 1
        if start < 0 or end < 0 or end < start:
            return refusal("startLine and endLine must be non-negative, endLine >= startLine")
        if end - start > allowed:
            if self.strict_window:
                return refusal(f"The page size must be smaller than {self.max_window} lines")
            return refusal(f"Log lines can be read in pages up to {self.max_window} lines")
        return None

    def _success(self, payload: dict[str, Any]) -> Reply:
        """A successful answer, with ``errors: []``, or bare: without it, and with a field
        no client knows."""
        if self.bare_answers:
            return json_reply({"success": True, **payload, "requestId": "emu-7f3a", "v": 2.1})
        return json_reply({"success": True, **payload, "errors": []})

    def _export_logs(self, body: dict[str, Any]) -> Reply:
        project = _required(body, "projectId")
        deploy = _required_text(body, "deployId")
        return self.export.answer(project, deploy)

    def stale_live_read(self, project_id: int, answers: int) -> None:
        """The project's next ``answers`` /live/read answers name its previous deployment."""
        with self._lock:
            self._stale_reads[project_id] = answers

    def _live_read(self, body: dict[str, Any]) -> Reply:
        project_id = _required(body, "projectId")
        with self._lock:
            stale = self._stale_reads.get(project_id, 0) > 0
            if stale:
                self._stale_reads[project_id] -= 1
            elif self.stale_read_rate:
                stale = self._rng.random() < self.stale_read_rate
        return self._success(self.model.latest(project_id, stale=stale))

    def _live_list(self, body: dict[str, Any]) -> Reply:
        status = body.get("status")
        if status is not None and status not in LIST_STATUSES:
            return refusal(f"Invalid status {status!r}; use one of {', '.join(LIST_STATUSES)}")
        project_id = _optional(body, "projectId")
        live = self.model.launches(status, None if self.list_ignores_project else project_id)
        return self._success({"live": live})

    def _projects_read(self, body: dict[str, Any]) -> Reply:
        chosen = self.model.projects(_optional(body, "projectId"))
        projects = [
            {"projectId": i, "name": n, "organizationId": "org", "language": "Py"}
            for i, n in chosen
        ]
        return self._success({"projects": projects})


class Handler(BaseHTTPRequestHandler):
    """One kept-alive connection; every answer leaves in a single write."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the emulator is quiet unless asked."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        return formatdate(self.server.api.now() if timestamp is None else timestamp, usegmt=True)

    def do_POST(self) -> None:
        api = self.server.api
        try:
            raw = self.rfile.read(max(0, int(self.headers.get("Content-Length") or 0)))
        except ValueError:
            raw = b""
            self.close_connection = True
        path = urlsplit(self.path).path.rstrip("/")
        path = path.removeprefix(BASE_PATH) if path.startswith(BASE_PATH + "/") else path
        api.count(path)
        api.answering.wait()
        if api.closing.is_set():
            self.close_connection = True
            return
        fault = api.faults.take(path)
        if api.latency:
            time.sleep(api.latency)
        if fault is not None:
            api.count(path, fault=True)
            if fault.kind == "reset":
                self._reset()
                return
            if fault.kind != "slow":
                self._send(fault_reply(fault, api.auth_failure))
                return
            time.sleep(fault.delay if fault.delay is not None else 2.0)
        self._send(api.answer(path, self.headers, raw))

    def _send(self, reply: Reply) -> None:
        phrase = HTTPStatus(reply.status).phrase
        head = [f"{self.protocol_version} {reply.status} {phrase}", "Server: qc-tail-emulator"]
        head.append(f"Date: {self.date_time_string()}")
        if reply.content_type is not None:
            head.append(f"Content-Type: {reply.content_type}")
        length = len(reply.body) if reply.length is None else reply.length
        if length != len(reply.body):
            self.close_connection = True
        head.append(f"Content-Length: {length}")
        head.extend(f"{name}: {value}" for name, value in reply.headers)
        if self.close_connection:
            head.append("Connection: close")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)

    def _reset(self) -> None:
        reset_connection(self)


def reset_connection(handler: BaseHTTPRequestHandler) -> None:
    """Close abruptly: SO_LINGER 0 makes the kernel send RST instead of FIN."""
    handler.close_connection = True
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.rfile.close()  # the socket closes for real only once its file objects let go
    handler.connection.close()


class CuttableServer(ThreadingHTTPServer):
    """A threading server that knows its open connections, so stopping can cut them.

    Also the base of the tests' recording Loki server.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._connections: set[socket.socket] = set()
        self._guard = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._guard:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._guard:
            self._connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self._guard:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up mid-answer are normal here; anything else is still shown."""
        if not isinstance(sys.exception(), OSError):
            super().handle_error(request, client_address)


class ApiServer(CuttableServer):
    """The emulator's server: its handler answers from ``api``."""

    def __init__(self, address: tuple[str, int], api: Api) -> None:
        self.api = api
        super().__init__(address, Handler)

"""A real Grafana Loki single binary for tests, and a proxy that holds its answers back.

The binary is named by ``$QC_TAIL_TEST_LOKI`` (``.ci/run`` sets it from
``../shared/tools/loki/loki-bin`` when that is there); without it the tests that need it skip.
Each ``RealLoki`` runs on free loopback ports with its own data folder, and with Loki's
defaults but for what only slows a test down (the ready wait, the scheduler look-ups).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import pytest
import requests

BINARY = os.environ.get("QC_TAIL_TEST_LOKI", "")
needs_loki = pytest.mark.skipif(
    not (BINARY and os.access(BINARY, os.X_OK)),
    reason="no Grafana Loki binary: set QC_TAIL_TEST_LOKI to one (.ci/run does, from "
    "../shared/tools/loki/loki-bin)",
)
PUSH_PATH = "/loki/api/v1/push"
QUERY_PATH = "/loki/api/v1/query_range"

CONFIG = """
auth_enabled: false
server:
  http_listen_address: 127.0.0.1
  http_listen_port: {http}
  grpc_listen_address: 127.0.0.1
  grpc_listen_port: {grpc}
  log_level: warn
common:
  instance_addr: 127.0.0.1
  path_prefix: {data}
  storage:
    object_store:
      filesystem:
        dir: {data}/chunks
  replication_factor: 1
  ring:
    kvstore:
      store: inmemory
schema_config:
  configs:
    - from: 2020-01-01
      store: tsdb
      object_store: filesystem
      schema: v13
      index:
        prefix: index_
        period: 24h
ingester:
  lifecycler:
    min_ready_duration: 0s
    final_sleep: 0s
frontend:
  scheduler_dns_lookup_period: 250ms
frontend_worker:
  dns_lookup_duration: 250ms
limits_config:
  reject_old_samples: true
analytics:
  reporting_enabled: false
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RealLoki:
    """The Loki binary on loopback, answering once ``/ready``; stopped with SIGTERM."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + PUSH_PATH

    def start(self) -> Self:
        config = self.data / "loki.yaml"
        config.write_text(CONFIG.format(http=self.port, grpc=_free_port(), data=self.data))
        with (self.data / "loki.log").open("wb") as log:
            self.process = subprocess.Popen(
                [BINARY, f"-config.file={config}"], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, (self.data / "loki.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Loki was not ready within 60 s"
            try:
                if requests.get(self.base_url + "/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def entries(
        self, selector: str, start: int, end: int
    ) -> dict[frozenset[tuple[str, str]], list[tuple[int, str]]]:
        """Every entry a log query finds, per stream (its labels), oldest first. A busy stream
        is split by Loki into shards (a ``__stream_shard__`` label): their entries are merged."""
        found: dict[frozenset[tuple[str, str]], list[tuple[int, str]]] = {}
        while start < end:
            answer = self._get(
                QUERY_PATH,
                query=selector,
                direction="forward",
                limit=5000,
                start=start,
                end=end,
            )
            result = answer["data"]["result"]
            last = start - 1
            for stream in result:
                labels = stream["stream"]
                key = frozenset((k, v) for k, v in labels.items() if k != "__stream_shard__")
                values = [(int(ts), line) for ts, line in stream["values"]]
                found.setdefault(key, []).extend(values)
                last = max(last, *(ts for ts, _ in values))
            if sum(len(stream["values"]) for stream in result) < 5000:
                break
            start = last + 1  # stamps are unique within our streams: no entry is skipped
        for values in found.values():
            values.sort()
        return found

    def lines(self, selector: str, start: int, end: int) -> list[str]:
        """The lines of one stream, oldest first, as a log query shows them."""
        streams = self.entries(selector, start, end)
        assert len(streams) <= 1, list(streams)
        return [line for values in streams.values() for _, line in values]

    def count(self, selector: str, start: int, end: int) -> int:
        """``sum(count_over_time(selector[end - start]))`` at ``end``: a metric query."""
        seconds = (end - start) // 1_000_000_000 + 1
        query = f"sum(count_over_time({selector}[{seconds}s]))"
        answer = self._get("/loki/api/v1/query", query=query, time=end)
        result = answer["data"]["result"]
        return int(result[0]["value"][1]) if result else 0

    def flush(self) -> None:
        """Cut and flush every chunk to the store, as an ingester does in time."""
        response = requests.post(self.base_url + "/flush", timeout=30)
        assert response.status_code == 204, response.text
        time.sleep(1)  # the flush goes on in the background

    def _get(self, path: str, **params: Any) -> Any:
        response = requests.get(self.base_url + path, params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


class DelayingProxy:
    """An HTTP proxy in front of Loki that holds each answer ``delay`` seconds.

    ``pushed`` is set whenever Loki has accepted a push whose answer is being held: a kill
    then lands after the push and before the pusher can save its cursor. ``refuse_queries``
    answers ``query_range`` itself with that status (Loki behind a push-only gateway).
    """

    def __init__(self, upstream: str, delay: float, refuse_queries: int | None = None) -> None:
        self.upstream = urlsplit(upstream)
        self.delay = delay
        self.refuse_queries = refuse_queries
        self.pushed = threading.Event()
        self.pushes = 0
        self.queries = 0
        self._server = _ProxyServer(("127.0.0.1", 0), self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{PUSH_PATH}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        route = urlsplit(path).path
        if route == QUERY_PATH:
            self.queries += 1
            if self.refuse_queries is not None:
                return self.refuse_queries, [("Content-Type", "text/plain")], b"refused\n"
        connection = http.client.HTTPConnection(
            self.upstream.hostname or "127.0.0.1", self.upstream.port, timeout=30
        )
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.status, response.getheaders(), response.read()
        finally:
            connection.close()
        if route == PUSH_PATH and 200 <= answer[0] < 300:
            self.pushes += 1
            self.pushed.set()
        time.sleep(self.delay)
        return answer


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _ProxyServer
    _HOP: ClassVar = {"connection", "keep-alive", "transfer-encoding", "content-length"}

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._relay()

    do_POST = do_GET

    def _relay(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in self._HOP}
        status, answer_headers, answer = self.server.proxy.forward(
            self.command, self.path, headers, body
        )
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        head += [f"{k}: {v}" for k, v in answer_headers if k.lower() not in self._HOP]
        head.append(f"Content-Length: {len(answer)}")
        try:
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + answer)
        except OSError:  # the pusher was killed while its answer was held
            self.close_connection = True


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], proxy: DelayingProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _ProxyHandler)


def selector(**labels: str) -> str:
    return "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in labels.items()) + "}"


def streams_of(entries: dict[Any, list[tuple[int, str]]]) -> Iterator[dict[str, str]]:
    for key in entries:
        yield dict(key)

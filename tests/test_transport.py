"""The HTTP transport: kept-alive connections, what it refuses, and what it never does."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.emulator import Emulator
from tailer.emulator.server import CuttableServer
from tailer.errors import ConfigError
from tailer.transport import HttpError, Transport

from .conftest import TOKEN, USER_ID

Answer = tuple[int, list[tuple[str, str]], bytes]


class Server(CuttableServer):
    """HTTP/1.1 on loopback: answers from ``respond``, counts the connections it accepted."""

    def __init__(self) -> None:
        self.respond: Callable[[bytes], Answer] = lambda body: (200, [], b"{}")
        self.accepted = 0
        self.bodies: list[bytes] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.bodies.append(body)
                status, headers, payload = owner.respond(body)
                head = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers)]
                framed = {k.lower() for k, _ in headers} & {"transfer-encoding", "content-length"}
                if not framed:
                    head.append(f"Content-Length: {len(payload)}")
                if any(k.lower() == "connection" and v == "close" for k, v in headers):
                    self.close_connection = True
                self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        owner = self
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.accepted += 1
        super().process_request(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/v2"


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    yield server
    server.shutdown()
    server.cut_connections()
    server.server_close()


@pytest.fixture
def transport(server: Server) -> Iterator[Transport]:
    transport = Transport(server.url, read_timeout=5)
    yield transport
    transport.close()


def chunked(data: bytes, size: int = 1000) -> bytes:
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def test_requests_share_one_kept_alive_connection(server: Server, transport: Transport) -> None:
    for i in range(20):
        answer = transport.post("/echo", b'{"i": %d}' % i, {})
        assert answer.status == 200
    assert server.accepted == 1
    assert server.bodies[-1] == b'{"i": 19}'


def test_each_concurrent_request_gets_its_own_connection_and_they_are_reused(
    server: Server, transport: Transport
) -> None:
    def respond(body: bytes) -> Answer:
        time.sleep(0.01)  # long enough for the threads to overlap
        return 200, [], body

    server.respond = respond
    seen: list[bytes] = []

    def work(n: int) -> None:
        for i in range(25):
            seen.append(transport.post("/x", f"{n}-{i}".encode(), {}).body)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == sorted(f"{n}-{i}".encode() for n in range(4) for i in range(25))
    assert server.accepted <= 4


def test_an_idle_connection_the_server_closed_is_replaced_before_use(
    server: Server, transport: Transport
) -> None:
    transport.post("/x", b"1", {})
    server.cut_connections()  # the server (or a load balancer) drops an idle connection
    time.sleep(0.05)
    assert transport.post("/x", b"2", {}).status == 200  # no error: a fresh connection
    assert server.accepted == 2


def test_an_answer_that_closes_the_connection_is_not_reused(
    server: Server, transport: Transport
) -> None:
    server.respond = lambda body: (200, [("Connection", "close")], b"{}")
    transport.post("/x", b"1", {})
    transport.post("/x", b"2", {})
    assert server.accepted == 2


def test_connections_send_without_nagle_delay(server: Server, transport: Transport) -> None:
    """Small writes must not wait for ACKs (Nagle): a request is latency-bound."""
    transport.post("/x", b"1", {})
    (connection,) = transport._idle
    assert connection.sock is not None
    assert connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_gzip_answers_are_decoded(server: Server, transport: Transport) -> None:
    payload = json.dumps({"logs": ["a"] * 1000}).encode()
    server.respond = lambda body: (200, [("Content-Encoding", "gzip")], gzip.compress(payload))
    assert transport.post("/x", b"", {}).body == payload


def test_a_chunked_answer_is_read_whole(server: Server, transport: Transport) -> None:
    payload = b"x" * 10_000
    server.respond = lambda body: (200, [("Transfer-Encoding", "chunked")], chunked(payload))
    assert transport.post("/x", b"", {}).body == payload
    transport.post("/x", b"", {})
    assert server.accepted == 1  # read to its end, so the connection stays usable


@pytest.mark.parametrize(
    ("headers", "payload", "message"),
    [
        ([("Content-Length", str(10**9))], b"", "too large"),  # refused before reading it
        ([("Transfer-Encoding", "chunked")], chunked(b"y" * 5000), "too large"),
        ([("Content-Encoding", "gzip")], gzip.compress(b"z" * 5000), "too large"),  # a bomb
        ([("Content-Encoding", "gzip")], gzip.compress(b"z" * 100)[:-12], "truncated gzip"),
        ([("Content-Encoding", "gzip")], b"not gzip at all", "broken gzip"),
        ([("Content-Encoding", "br")], b"\x00\x01", "not asked for"),
    ],
    ids=["content-length", "chunked", "gzip-bomb", "gzip-truncated", "gzip-broken", "brotli"],
)
def test_answers_it_cannot_trust_are_refused(
    server: Server, headers: list[tuple[str, str]], payload: bytes, message: str
) -> None:
    transport = Transport(server.url, max_body=4096)
    server.respond = lambda body: (200, headers, payload)
    with pytest.raises(HttpError, match=message):
        transport.post("/x", b"", {})
    server.respond = lambda body: (200, [], b"{}")
    assert transport.post("/x", b"", {}).body == b"{}"  # and the next exchange is clean
    transport.close()


def test_a_stalled_server_gives_an_error_after_the_read_timeout() -> None:
    with Emulator(USER_ID, TOKEN).start() as emu:
        transport = Transport(emu.base_url, read_timeout=0.5)
        emu.stall(True)
        started = time.monotonic()
        with pytest.raises(HttpError, match="timed out"):
            transport.post("/authenticate", b"{}", {})
        assert time.monotonic() - started < 5
        emu.stall(False)
        transport.close()


def test_a_refused_connection_is_an_http_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again at once: nothing listens there
    transport = Transport(f"http://127.0.0.1:{port}/api/v2", connect_timeout=2)
    with pytest.raises(HttpError, match="ConnectionRefused"):
        transport.post("/x", b"", {})


def test_a_ca_bundle_that_is_not_a_certificate_is_a_config_error(tmp_path: Any) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"api\.ca_bundle"):
        QcApi("https://127.0.0.1:1/api/v2", QcAuth(USER_ID, TOKEN), ca_bundle=bundle)


def test_the_api_client_keeps_one_connection_for_a_whole_catch_up() -> None:
    with Emulator(USER_ID, TOKEN).start() as emu:
        emu.add_project(7, "kept")
        deploy = emu.deploy(7)
        emu.write(7, [f"line {i}" for i in range(1000)])
        emu.publish(7)
        api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN))
        for start in range(0, 1000, 249):
            api.read_logs(7, deploy, start, start + 249)
        assert len(api.transport._idle) == 1  # one connection served all five requests
        api.close()
        assert api.transport._idle == []

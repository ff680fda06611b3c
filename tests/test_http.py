"""The HTTP client: kept-alive connections, what it refuses, what it never does, its deadline."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import trustme

from tailer.emulator import Emulator
from tailer.emulator.server import CuttableServer
from tailer.http import HttpClient, HttpError, TlsError, TooLargeError

from .conftest import TOKEN, USER_ID, trickling

Answer = tuple[int, list[tuple[str, str]], bytes]


class Server(CuttableServer):
    """HTTP/1.1 on loopback: answers from ``respond``, counts the connections it accepted."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.respond: Callable[[bytes], Answer] = lambda body: (200, [], b"{}")
        self.accepted = 0
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.tls = tls

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.bodies.append(body)
                owner.headers.append({k.lower(): v for k, v in self.headers.items()})
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

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_side=True)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        self.accepted += 1
        super().process_request(request, client_address)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}/api/v2/x"

    def stop(self) -> None:
        self.shutdown()
        self.cut_connections()
        self.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    yield server
    server.stop()


@pytest.fixture
def client() -> Iterator[HttpClient]:
    client = HttpClient()
    yield client
    client.close()


def post(client: HttpClient, server: Server, body: bytes = b"{}", timeout: float = 10) -> Any:
    return client.post(server.url, body, {}, timeout=timeout)


def chunked(data: bytes, size: int = 1000) -> bytes:
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


# -- kept-alive connections -------------------------------------------------------------------


def test_requests_share_one_kept_alive_connection(server: Server, client: HttpClient) -> None:
    for i in range(20):
        assert post(client, server, b'{"i": %d}' % i).status == 200
    assert server.accepted == 1
    assert server.bodies[-1] == b'{"i": 19}'


def test_each_concurrent_request_gets_its_own_connection_and_they_are_reused(
    server: Server,
) -> None:
    def respond(body: bytes) -> Answer:
        time.sleep(0.01)  # long enough for the threads to overlap
        return 200, [], body

    server.respond = respond
    client = HttpClient(pool_size=4)
    seen: list[bytes] = []

    def work(n: int) -> None:
        for i in range(25):
            seen.append(bytes(post(client, server, f"{n}-{i}".encode()).body))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert sorted(seen) == sorted(f"{n}-{i}".encode() for n in range(4) for i in range(25))
    assert server.accepted <= 4


def test_an_idle_connection_the_server_closed_is_replaced_before_use(
    server: Server, client: HttpClient
) -> None:
    post(client, server)
    server.cut_connections()  # the server (or a load balancer) drops an idle connection
    time.sleep(0.05)
    assert post(client, server).status == 200  # no error: a fresh connection
    assert server.accepted == 2


def test_a_connection_older_than_max_age_is_not_reused(server: Server) -> None:
    now = [1000.0]
    client = HttpClient(max_age=300, clock=lambda: now[0])
    post(client, server)
    now[0] += 299
    post(client, server)
    assert server.accepted == 1  # still young: reused
    now[0] += 2
    post(client, server)
    assert server.accepted == 2  # 301 s old: replaced, not reused
    post(client, server)
    assert server.accepted == 2  # and the new one is reused in turn
    client.close()


def test_an_answer_that_closes_the_connection_is_not_reused(
    server: Server, client: HttpClient
) -> None:
    server.respond = lambda body: (200, [("Connection", "close")], b"{}")
    post(client, server)
    post(client, server)
    assert server.accepted == 2


def test_bytes_after_an_answer_are_never_read_as_the_next_answer(
    server: Server, client: HttpClient
) -> None:
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nsmuggled!"
    server.respond = lambda body: (200, [("Content-Length", "2")], b"{}" + smuggled)
    assert bytes(post(client, server).body) == b"{}"
    time.sleep(0.05)
    server.respond = lambda body: (200, [], b'{"real": 1}')
    assert bytes(post(client, server).body) == b'{"real": 1}'


def test_connections_send_without_nagle_delay(server: Server, client: HttpClient) -> None:
    """Small writes must not wait for ACKs (Nagle): a request is latency-bound."""
    post(client, server)
    pools = client.adapter.poolmanager.pools
    (pool,) = [pools[key] for key in pools.keys()]  # noqa: SIM118 (it cannot be iterated)
    (connection,) = [c for c in pool.pool.queue if c is not None and c.sock is not None]
    assert connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


# -- what comes back ----------------------------------------------------------------------------


def test_gzip_is_asked_for_and_decoded(server: Server, client: HttpClient) -> None:
    payload = json.dumps({"logs": ["a"] * 1000}).encode()
    server.respond = lambda body: (200, [("Content-Encoding", "gzip")], gzip.compress(payload))
    assert bytes(post(client, server).body) == payload
    assert server.headers[-1]["accept-encoding"] == "gzip"


def test_a_chunked_answer_is_read_whole(server: Server, client: HttpClient) -> None:
    payload = b"x" * 10_000
    server.respond = lambda body: (200, [("Transfer-Encoding", "chunked")], chunked(payload))
    assert bytes(post(client, server).body) == payload
    post(client, server)
    assert server.accepted == 1  # read to its end, so the connection stays usable


@pytest.mark.parametrize(
    ("headers", "payload", "error", "message"),
    [
        ([("Content-Length", str(10**9))], b"", TooLargeError, "too large"),  # before reading
        ([("Transfer-Encoding", "chunked")], chunked(b"y" * 5000), TooLargeError, "too large"),
        ([("Content-Encoding", "gzip")], gzip.compress(b"z" * 5000), TooLargeError, "too large"),
        ([("Content-Encoding", "gzip")], b"not gzip at all", HttpError, "decompressing"),
        ([("Content-Encoding", "br")], b"\x00\x01", HttpError, "not asked for"),
    ],
    ids=["content-length", "chunked", "gzip-bomb", "gzip-broken", "brotli"],
)
def test_answers_it_cannot_trust_are_refused(
    server: Server, headers: list[tuple[str, str]], payload: bytes, error: type, message: str
) -> None:
    client = HttpClient(max_body=4096)
    server.respond = lambda body: (200, headers, payload)
    with pytest.raises(error, match=message):
        post(client, server)
    server.respond = lambda body: (200, [], b"{}")
    assert bytes(post(client, server).body) == b"{}"  # and the next exchange is clean
    client.close()


def _big_objects(exc: BaseException) -> list[str]:
    """Objects over 1 MB that ``exc`` keeps alive through its tracebacks and causes."""
    found, seen = [], set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        tb = error.__traceback__
        while tb is not None:
            for name, value in tb.tb_frame.f_locals.items():
                if isinstance(value, bytes | bytearray | str | list) and len(value) > 1 << 20:
                    found.append(f"{tb.tb_frame.f_code.co_name}: {name}")
            tb = tb.tb_next
        error = error.__cause__ or error.__context__
    return found


def test_a_refused_answer_keeps_no_buffer_in_its_error(server: Server) -> None:
    """An error held across retries (tenacity keeps the last one) must not pin megabytes."""
    client = HttpClient(max_body=8 << 20)
    bomb = gzip.compress(b"\0" * (64 << 20))
    server.respond = lambda body: (200, [("Content-Encoding", "gzip")], bomb)
    with pytest.raises(TooLargeError) as raised:
        post(client, server)
    assert _big_objects(raised.value) == []
    client.close()


# -- what it never does -------------------------------------------------------------------------


def test_a_redirect_is_returned_not_followed(server: Server, client: HttpClient) -> None:
    elsewhere = Server()
    server.respond = lambda body: (307, [("Location", elsewhere.url)], b"")
    answer = post(client, server)
    assert (answer.status, answer.header("location")) == (307, elsewhere.url)
    assert elsewhere.accepted == 0
    elsewhere.stop()


def test_nothing_is_taken_from_the_environment(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proxy variables and ``~/.netrc`` would send our requests, or a password, elsewhere."""
    with socket.create_server(("127.0.0.1", 0)) as proxy:  # would hang every request
        proxy_url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy_url)
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login someone password hunter2\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = HttpClient()
        assert post(client, server, timeout=5).status == 200  # straight to the server
        assert "authorization" not in server.headers[-1]
        client.close()


def test_no_cookie_is_kept(server: Server, client: HttpClient) -> None:
    """Every request is signed on its own; a jar a server could fill would only grow."""
    server.respond = lambda body: (200, [("Set-Cookie", "sticky=1; Path=/")], b"{}")
    post(client, server)
    post(client, server)
    assert "cookie" not in server.headers[-1]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = Server(tls=context)
    yield server
    server.stop()


def test_tls_is_verified_against_the_ca_bundle(
    tls_server: Server, ca: trustme.CA, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    client = HttpClient(ca_bundle=bundle)
    assert post(client, tls_server).status == 200
    client.close()


def test_an_unverified_certificate_is_a_tls_error_and_no_request_is_sent(
    tls_server: Server, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))  # not read: the environment is not
    monkeypatch.setenv("CURL_CA_BUNDLE", str(bundle))
    client = HttpClient()
    with pytest.raises(TlsError, match="certificate"):
        post(client, tls_server)
    assert tls_server.bodies == []
    client.close()


def test_a_ca_bundle_that_is_not_a_certificate_is_refused_at_once(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    with pytest.raises(ssl.SSLError):
        HttpClient(ca_bundle=bundle)


def test_a_refused_connection_is_an_http_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again at once: nothing listens there
    with pytest.raises(HttpError, match="ConnectionRefused"):
        HttpClient().post(f"http://127.0.0.1:{port}/x", b"", {}, timeout=2)


# -- the deadline -------------------------------------------------------------------------------


TRICKLES = {
    "status-line": (b"", b"HTTP/1.1 200 OK\r\n" + b"X" * 1000),
    "headers": (b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 1000),
    "body": (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"{" + b" " * 999),
    "chunked-body": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n", b" " * 1000),
    "body-to-close": (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b" " * 1000),
}


@pytest.mark.parametrize(("head", "drip"), TRICKLES.values(), ids=TRICKLES.keys())
def test_the_timeout_bounds_the_whole_exchange_against_a_trickle(head: bytes, drip: bytes) -> None:
    outcome: list[BaseException | object] = []
    with trickling(head, drip) as url:
        client = HttpClient()

        def call() -> None:
            try:
                outcome.append(client.post(url, b"{}", {}, timeout=1.0))
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        thread.join(timeout=60)  # a hang guard: the trickle alone would take 200 s
        assert not thread.is_alive(), "the request outlived its timeout"
        client.close()
    (error,) = outcome
    assert isinstance(error, HttpError)
    assert "no whole answer within the 1 s timeout" in str(error)


def test_a_stalled_server_gives_an_error_within_the_timeout() -> None:
    with Emulator(USER_ID, TOKEN).start() as emu:
        client = HttpClient()
        emu.stall(True)
        with pytest.raises(HttpError, match=r"timed out|no whole answer"):
            client.post(emu.base_url + "/authenticate", b"{}", {}, timeout=0.5)
        emu.stall(False)
        client.close()

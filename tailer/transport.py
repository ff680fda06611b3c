"""Kept-alive HTTP/1.1 connections to one origin: how the QuantConnect client sends its bytes.

Not ``requests``: a catch-up sends hundreds of requests a second, and ``requests`` spends
about 0.5 ms of CPU on each one preparing what never changes here (cookies, hooks, proxies,
the URL parsed again), several times what the exchange itself costs (``wire.py``; figures in
bench/README.md). What it leaves out is on purpose: redirects are returned, not followed
(credentials stay with the origin); nothing is taken from the environment (proxy variables,
``~/.netrc``); certificates are always verified.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import weakref
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tailer.wire import Connection, HttpError, request_head

__all__ = ["MAX_BODY", "HttpError", "Response", "TlsError", "Transport"]

MAX_BODY = 64 * 1024 * 1024
"""The largest answer accepted, before or after decompression (a window of 249 lines)."""


class TlsError(HttpError):
    """The server's certificate could not be verified: another try will not change that."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Transport:
    """POSTs to one origin over a small pool of kept-alive connections; thread-safe.

    A connection is checked out for one exchange and returned only when its answer was read
    whole and the server keeps it open; an idle one the server has closed meanwhile is noticed
    (it reads as ready) and replaced before it is used.
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        ca_bundle: Path | None = None,
        headers: Mapping[str, str] | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.prefix = url.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_body = max_body
        self._tls = _tls_context(ca_bundle) if url.scheme == "https" else None
        name = f"[{self.host}]" if ":" in self.host else self.host
        self._authority = name if url.port is None else f"{name}:{url.port}"
        self._headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        self._headers.update(headers or {})
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._idle, self._lock)  # when it is collected

    def post(self, path: str, body: bytes, headers: Mapping[str, str]) -> Response:
        """One exchange; HttpError (TlsError) when no whole answer came back."""
        head = request_head(
            "POST", self.prefix + path, self._authority, {**self._headers, **headers}, len(body)
        )
        connection = self._checkout()
        try:
            status, answer_headers, data = connection.exchange(head, body, self.max_body)
        except ssl.SSLCertVerificationError as exc:
            connection.close()
            raise TlsError(exc.verify_message or str(exc)) from None
        except OSError as exc:
            connection.close()
            raise HttpError(f"{type(exc).__name__}: {exc}"[:300]) from None
        except BaseException:
            connection.close()
            raise
        if connection.reusable:
            with self._lock:
                self._idle.append(connection)
        else:
            connection.close()
        encoding = answer_headers.get("content-encoding", "").strip().lower()
        return Response(status, answer_headers, self._decode(encoding, data))

    def close(self) -> None:
        """Close the idle connections; the transport stays usable (it opens new ones)."""
        _close_all(self._idle, self._lock)

    def _checkout(self) -> Connection:
        while True:
            with self._lock:
                if not self._idle:
                    break
                connection = self._idle.pop()
            if _usable(connection.sock):
                return connection
            connection.close()
        return self._connect()

    def _connect(self) -> Connection:
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout)
            # One request goes out in one write, but an answer's last segment should never
            # wait on Nagle's algorithm either.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(self.read_timeout)
        except ssl.SSLCertVerificationError as exc:
            if sock is not None:
                sock.close()
            raise TlsError(exc.verify_message or str(exc)) from None
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise HttpError(f"{type(exc).__name__}: {exc}"[:300]) from None
        return Connection(sock)

    def _decode(self, encoding: str, data: bytes) -> bytes:
        if encoding in ("", "identity"):
            return data
        if encoding not in ("gzip", "x-gzip"):
            raise HttpError(f"an answer in an encoding that was not asked for: {encoding[:40]!r}")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            plain = inflater.decompress(data, self.max_body + 1)
        except zlib.error as exc:
            raise HttpError(f"a broken gzip answer: {exc}") from None
        if len(plain) > self.max_body:
            raise HttpError(f"an answer of more than {self.max_body} bytes is too large")
        if not inflater.eof:
            raise HttpError("a truncated gzip answer")
        return plain


def _close_all(idle: list[Connection], lock: threading.Lock) -> None:
    with lock:
        connections = idle[:]
        idle.clear()
    for connection in connections:
        connection.close()


def _tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """Verified TLS: the system's authorities, or only ``ca_bundle``'s when it is given."""
    if ca_bundle is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_bundle))


def _usable(sock: socket.socket) -> bool:
    """An idle kept-alive connection is usable unless it reads as ready: the server closed
    it (or sent something unasked), either way the next answer could not be trusted to it."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)

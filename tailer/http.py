"""HTTP through ``requests``, set up once for every client of qc-tail.

Requests are prepared by ``requests.Request`` and sent by one shared ``HTTPAdapter``, without a
``Session``: what a session adds to each request (merging its settings, reading the environment,
cookies, redirects) is all unwanted here, and costs CPU on every one.

What the set-up guarantees: certificates are always verified (against ``ca_bundle`` alone when
one is given); redirects are returned, never followed; nothing is taken from the environment
(proxy variables, ``~/.netrc``, CA variables) and no cookie is kept; only gzip is asked for, and
an answer may not pass ``max_body`` bytes, compressed or not, counted while it streams in;
``timeout`` bounds the whole exchange, from connecting to the last byte; a kept-alive
connection older than ``max_age`` is not reused (NAT and load-balancer state goes stale), and
one the server closed is replaced before use (urllib3 checks). One ``HttpClient`` is safe to
share between threads: its pool keeps up to ``pool_size`` connections.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from tailer.deadline import Deadlines

__all__ = ["MAX_AGE", "MAX_BODY", "HttpClient", "HttpError", "Response", "TlsError"]

MAX_BODY = 64 * 1024 * 1024
"""The largest answer accepted, before or after decompression."""

MAX_AGE = 240.0
"""Seconds a kept-alive connection is reused; QuantConnect's own client renews at five minutes."""

MAX_FILE = 1024 * 1024 * 1024
"""The largest file download accepted (it goes to disk, not to memory)."""

CONNECT_TIMEOUT = 10.0
_CHUNK = 256 * 1024

Clock = Callable[[], float]


class HttpError(Exception):
    """No whole, acceptable answer came back: worth another try. ``sent``: the request may
    have reached the server (it failed after connecting), so it may have been acted upon."""

    sent = True


class TlsError(HttpError):
    """The server's certificate could not be verified: another try will not change that."""


class TooLargeError(HttpError):
    """The answer passed ``max_body`` bytes: a smaller question may get one that fits."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes | bytearray

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class HttpClient:
    """POSTs over a pool of kept-alive connections; thread-safe."""

    def __init__(
        self,
        *,
        pool_size: int = 4,
        ca_bundle: Path | None = None,
        headers: Mapping[str, str] | None = None,
        max_body: int = MAX_BODY,
        max_age: float = MAX_AGE,
        clock: Clock = time.monotonic,
    ) -> None:
        if ca_bundle is not None:  # read now: a bad bundle is a configuration error
            ssl.create_default_context(cafile=str(ca_bundle))
        self.max_body = max_body
        self._clock = clock
        self.deadlines = Deadlines(clock)
        self._verify: str | bool = str(ca_bundle) if ca_bundle is not None else True
        self._headers = {**requests.utils.default_headers(), "Accept-Encoding": "gzip"}
        self._headers.update(headers or {})
        self.adapter = _Adapter(pool_size, _Ages(clock, max_age), self.deadlines)

    def close(self) -> None:
        """Close the idle connections (a later request opens new ones)."""
        self.adapter.close()

    def post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        *,
        timeout: float,
        auth: Any = None,
    ) -> Response:
        """One POST within ``timeout`` seconds (see ``request``)."""
        return self.request("POST", url, headers, data=body, timeout=timeout, auth=auth)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        timeout: float,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        auth: Any = None,
        into: IO[bytes] | None = None,
    ) -> Response:
        """One exchange within ``timeout`` seconds; HttpError when no whole answer came back.

        With ``into``, a 200 answer that is not JSON (a file download) is written there as it
        streams in, up to ``MAX_FILE`` bytes, and the Response's body is empty: memory stays
        flat whatever the file's size. Other answers come back whole, as without it.

        The error is raised outside any ``except`` and keeps no buffer: a traceback held
        across retries must not hold an answer's megabytes with it.
        """
        error: HttpError | None = None
        with self.deadlines.exchange(self._clock() + timeout) as exchange:
            try:
                request = requests.Request(
                    method,
                    url,
                    headers={**self._headers, **headers},
                    data=data,
                    params=params,
                    auth=auth,
                ).prepare()
                answer = self.adapter.send(
                    request,
                    stream=True,
                    timeout=(min(CONNECT_TIMEOUT, timeout), timeout),
                    verify=self._verify,
                )
                with answer:
                    if into is not None and _is_file(answer):
                        body = self._spool(answer, into)
                    else:
                        body = self._body(answer)
            except HttpError as exc:
                error = exc
            except requests.RequestException as exc:
                error = _failure(exc)
        if exchange.expired:  # whatever the cut-off answer looked like
            raise HttpError(f"no whole answer within the {timeout:g} s timeout")
        if error is not None:
            raise error
        return Response(answer.status_code, answer.headers, body)

    def _body(self, answer: requests.Response) -> bytearray:
        """The decoded body, refused as soon as it passes ``max_body``."""
        encoding = (answer.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            raise HttpError(f"an answer in an encoding that was not asked for: {encoding[:40]!r}")
        length = answer.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise TooLargeError(f"an answer of {int(length)} bytes is too large")
        data = bytearray()
        try:
            for chunk in answer.iter_content(_CHUNK):
                data += chunk
                if len(data) > self.max_body or answer.raw.tell() > self.max_body:
                    raise TooLargeError(
                        f"an answer of more than {self.max_body} bytes is too large"
                    )
        except BaseException:
            data.clear()  # the traceback keeps this frame; it must not keep the bytes
            raise
        return data

    def _spool(self, answer: requests.Response, into: IO[bytes]) -> bytearray:
        """The decoded body written to ``into``, refused as soon as it passes ``MAX_FILE``."""
        encoding = (answer.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            raise HttpError(f"an answer in an encoding that was not asked for: {encoding[:40]!r}")
        written = 0
        for chunk in answer.iter_content(_CHUNK):
            into.write(chunk)
            written += len(chunk)
            if written > MAX_FILE or answer.raw.tell() > MAX_FILE:
                raise TooLargeError(f"a file of more than {MAX_FILE} bytes is too large")
        return bytearray()


def _is_file(answer: requests.Response) -> bool:
    """Whether the answer is a file download (a 200 that is not JSON)."""
    kind = (answer.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return answer.status_code == 200 and kind != "application/json"


def _failure(exc: requests.RequestException) -> HttpError:
    """The innermost cause, short, as an HttpError (a TlsError for an unverified certificate),
    noting whether the request may have been sent before it failed."""
    inner: BaseException = exc
    error: HttpError | None = None
    while (deeper := inner.__cause__ or inner.__context__) is not None and deeper is not inner:
        inner = deeper
        if isinstance(inner, ssl.SSLCertVerificationError):
            error = TlsError(inner.verify_message or str(inner))
            break
    if error is None:
        text = str(inner).strip() or type(inner).__name__
        error = HttpError(f"{type(inner).__name__}: {text}"[:300])
    error.sent = _may_have_been_sent(exc)
    return error


def _may_have_been_sent(exc: requests.RequestException) -> bool:
    """Whether the request may have reached the server before it failed (else it never left:
    no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError):
        return False
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    return not isinstance(reason, NewConnectionError | ConnectTimeoutError)


# -- the pool ---------------------------------------------------------------------------------


class _Ages:
    """When each connection was opened, so that an old one is closed rather than reused."""

    def __init__(self, clock: Clock, max_age: float) -> None:
        self.clock = clock
        self.max_age = max_age

    def check(self, conn: Any) -> None:
        now = self.clock()
        if conn.sock is not None and now - getattr(conn, "qc_opened", now) >= self.max_age:
            conn.close()
        if conn.sock is None:  # opened by the request about to use it
            conn.qc_opened = now


if TYPE_CHECKING:
    _PoolBase = HTTPConnectionPool
else:
    _PoolBase = object


class _Watched(_PoolBase):
    """A pool whose connections are renewed with age and watched by their request's deadline."""

    ages: _Ages | None = None
    deadlines: Deadlines | None = None

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        if self.ages is not None:
            self.ages.check(conn)
        if self.deadlines is not None:
            self.deadlines.lend(conn)
        return conn

    def _put_conn(self, conn: Any) -> None:
        if self.deadlines is not None:
            self.deadlines.give_back(conn)
        super()._put_conn(conn)


class _HTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        # Kept: http.client lets go of ``sock`` when an answer is read to the close, and the
        # deadline must still reach it.
        self.last_sock = self.sock


class _HTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        self.last_sock = self.sock


class _HTTPPool(_Watched, HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_Watched, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Adapter(HTTPAdapter):
    """requests' adapter, with ``_Watched`` pools and no retries of its own (ours decide)."""

    def __init__(self, pool_size: int, ages: _Ages, deadlines: Deadlines) -> None:
        self._ages = ages
        self._deadlines = deadlines
        super().__init__(pool_connections=1, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> ConnectionPool:
        pool = super().get_connection_with_tls_context(*args, **kwargs)
        if isinstance(pool, _Watched):
            pool.ages, pool.deadlines = self._ages, self._deadlines
        return pool

"""HTTP/1.1 framing on a real socket pair: what is read, what is refused, what is reused."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tailer.wire import Connection, HttpError, request_head

HEAD = request_head("POST", "/api/v2/x", "h", {"A": "1"}, 2)


@pytest.fixture
def pair() -> Iterator[tuple[Connection, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    yield Connection(ours), theirs
    ours.close()
    theirs.close()


def answer(
    pair: tuple[Connection, socket.socket], raw: bytes, *, close: bool = False
) -> tuple[int, dict[str, str], bytes]:
    connection, server = pair
    server.sendall(raw)
    if close:
        server.shutdown(socket.SHUT_WR)
    status, headers, body = connection.exchange(HEAD, b"{}", 1 << 20)
    assert server.recv(1 << 16) == HEAD + b"{}"  # the request went out whole, in one piece
    return status, headers, body


def test_the_request_is_one_block_with_its_length() -> None:
    assert HEAD == (b"POST /api/v2/x HTTP/1.1\r\nHost: h\r\nA: 1\r\nContent-Length: 2\r\n\r\n")


@pytest.mark.parametrize("bad", ["a\r\nInjected: 1", "a\nb", "a\0"])
def test_a_header_with_a_line_break_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        request_head("POST", "/x", "h", {"Timestamp": bad}, 0)
    with pytest.raises(ValueError, match="line break"):
        request_head("POST", f"/x{bad}", "h", {}, 0)


def test_a_content_length_answer_is_read_and_the_connection_kept(pair) -> None:
    status, headers, body = answer(
        pair, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"
    )
    assert (status, body, headers["x-a"]) == (200, b"hello", "b")
    assert pair[0].reusable


def test_bare_lf_line_endings_are_read(pair) -> None:
    status, _, body = answer(pair, b"HTTP/1.1 201 Created\nContent-Length: 2\n\nok")
    assert (status, body) == (201, b"ok")


def test_interim_answers_are_skipped(pair) -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"
    assert answer(pair, raw)[::2] == (200, b"x")


def test_a_chunked_answer_with_extensions_and_trailers(pair) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    )
    assert answer(pair, raw)[2] == b"hello world"
    assert pair[0].reusable


def test_an_answer_to_the_close_is_read_and_the_connection_dropped(pair) -> None:
    assert answer(pair, b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close=True)[2] == b"until the end"
    assert not pair[0].reusable


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n",  # unasked bytes
    ],
    ids=["connection-close", "http-1.0", "leftover-bytes"],
)
def test_a_connection_is_not_reused_when_its_next_answer_could_not_be_trusted(pair, raw) -> None:
    answer(pair, raw)
    assert not pair[0].reusable


def test_no_content_has_no_body_even_if_bytes_follow(pair) -> None:
    status, _, body = answer(pair, b"HTTP/1.1 204 No Content\r\n\r\n")
    assert (status, body) == (204, b"")
    assert pair[0].reusable


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "closed the connection without answering"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 abc Broken\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/2 200\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 101 Switching\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed answer header"),
        (b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", "malformed answer header"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 101 + b"\r\n", "more than 100 headers"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, "headers pass"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", "two different"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9999999\r\n\r\n", "too large"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "5 bytes before"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", "longer than"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "before the answer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "middle of a chunked"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0", "middle of an answer"),
    ],
)
def test_an_answer_that_cannot_be_framed_for_certain_is_an_http_error(pair, raw, message) -> None:
    connection, server = pair
    server.sendall(raw)
    server.shutdown(socket.SHUT_WR)
    with pytest.raises(HttpError, match=message):
        connection.exchange(HEAD, b"{}", 1 << 20)


def test_a_body_over_the_limit_is_refused_while_reading(pair) -> None:
    connection, server = pair
    server.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 5000)
    server.shutdown(socket.SHUT_WR)
    with pytest.raises(HttpError, match="too large"):
        connection.exchange(HEAD, b"{}", 4096)

"""The Loki push fake itself, exercised over loopback the way a client sees it."""

from __future__ import annotations

import gzip
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.loki_recorder import FAULT_KINDS, NO_STREAMS, LokiRecorder, stream_string

JSON = {"Content-Type": "application/json"}
APP = {"app": "qc", "deploy": "L-1"}
APP_KEY = frozenset({**APP, "service_name": "qc"}.items())  # Loki adds service_name


def now_ns(offset_s: float = 0) -> int:
    return time.time_ns() + int(offset_s * 1e9)


def stream(labels: dict[str, Any], *values: Any) -> dict[str, Any]:
    return {"stream": labels, "values": list(values)}


def entry(ts: int, line: str, metadata: dict[str, str] | None = None) -> list[Any]:
    return [str(ts), line] if metadata is None else [str(ts), line, metadata]


def push(
    loki: LokiRecorder,
    *streams: dict[str, Any],
    session: requests.Session | None = None,
    headers: dict[str, str] | None = None,
    compress: bool = False,
    timeout: float = 5,
) -> requests.Response:
    body = json.dumps({"streams": list(streams)}).encode()
    sent = dict(JSON) | (headers or {})
    if compress:
        body, sent["Content-Encoding"] = gzip.compress(body), "gzip"
    post = requests.post if session is None else session.post
    return post(loki.url, data=body, headers=sent, timeout=timeout)


def post_raw(loki: LokiRecorder, body: bytes, **headers: str) -> requests.Response:
    return requests.post(loki.url, data=body, headers=JSON | headers, timeout=5)


@pytest.fixture
def loki() -> Iterator[LokiRecorder]:
    with LokiRecorder() as recorder:
        yield recorder


# -- the happy path ----------------------------------------------------------------------------


def test_valid_push_gets_204_and_is_recorded(loki: LokiRecorder) -> None:
    ts = now_ns()
    body = {"streams": [stream(APP, entry(ts, "a"), entry(ts + 1, "b", {"trace": "t1"}))]}
    raw = json.dumps(body).encode()

    response = post_raw(loki, raw)

    assert loki.url == f"http://127.0.0.1:{loki.port}/loki/api/v1/push"
    assert response.status_code == 204
    assert response.content == b""
    assert loki.streams() == {APP_KEY: [(ts, "a"), (ts + 1, "b")]}
    assert loki.metadata(app="qc") == [(ts, "a", {}), (ts + 1, "b", {"trace": "t1"})]
    assert (loki.pushes, loki.accepted, loki.rejected) == (1, 2, 0)
    assert loki.requests == [(204, len(raw))]
    assert loki.bodies == [raw]


def test_gzip_body_is_decompressed(loki: LokiRecorder) -> None:
    ts = now_ns()
    response = push(loki, stream(APP, entry(ts, "zipped")), compress=True)

    assert response.status_code == 204
    assert loki.entries(app="qc") == [(ts, "zipped")]
    assert json.loads(loki.bodies[0])["streams"][0]["values"] == [[str(ts), "zipped"]]
    assert loki.requests[0][1] < len(loki.bodies[0]) + 30  # the wire size is the gzipped size


def test_broken_gzip_is_400(loki: LokiRecorder) -> None:
    response = post_raw(loki, b"not gzip at all", **{"Content-Encoding": "gzip"})

    assert response.status_code == 400
    assert "gzip" in response.text
    assert loki.streams() == {}


def test_keep_alive_connection_serves_many_pushes(loki: LokiRecorder) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", loki.port, timeout=5)
    try:
        statuses = []
        for i in range(3):
            body = json.dumps({"streams": [stream(APP, entry(now_ns(), f"l{i}"))]})
            connection.request("POST", "/loki/api/v1/push", body=body, headers=JSON)
            response = connection.getresponse()
            assert response.read() == b""
            statuses.append(response.status)
            assert response.getheader("Content-Length") is None
        assert statuses == [204, 204, 204]
        assert loki.lines() == ["l0", "l1", "l2"]
    finally:
        connection.close()


def test_chunked_body_is_accepted(loki: LokiRecorder) -> None:
    ts = now_ns()
    raw = json.dumps({"streams": [stream(APP, entry(ts, "chunked"))]}).encode()

    response = requests.post(loki.url, data=iter([raw[:10], raw[10:]]), headers=JSON, timeout=5)

    assert response.status_code == 204
    assert loki.lines() == ["chunked"]


# -- what is not the push endpoint --------------------------------------------------------------


def test_other_paths_are_404_and_other_methods_405(loki: LokiRecorder) -> None:
    other = requests.post(loki.base_url + "/api/prom/push", data=b"{}", headers=JSON, timeout=5)
    get = requests.get(loki.url, timeout=5)

    assert other.status_code == 404
    assert get.status_code == 405
    assert loki.pushes == 0


@pytest.mark.parametrize(
    ("content_type", "reason"),
    [
        ("application/x-protobuf", "snappy: corrupt input"),
        ("text/plain", "snappy: corrupt input"),
        ("application/jsonl", "snappy: corrupt input"),
        (None, "mime: no media type"),
    ],
)
def test_no_or_a_non_json_content_type_is_400(
    loki: LokiRecorder, content_type: str | None, reason: str
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = json.dumps({"streams": [stream(APP, entry(now_ns(), "x"))]}).encode()

    response = requests.post(loki.url, data=body, headers=headers, timeout=5)

    assert (response.status_code, response.text) == (400, reason + "\n")
    assert loki.streams() == {}


def test_json_with_charset_is_fine_but_snappy_encoding_is_415(loki: LokiRecorder) -> None:
    body = json.dumps({"streams": [stream(APP, entry(now_ns(), "x"))]}).encode()
    charset = {"Content-Type": "application/json; charset=utf-8"}

    assert post_raw(loki, body, **charset).status_code == 204
    assert post_raw(loki, body, **{"Content-Encoding": "snappy"}).status_code == 415


# -- the contract: whole-request 400s ------------------------------------------------------------

GOOD = entry(1, "x")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        (b"[]", '{"streams": [...]}'),
        (b'{"stream": []}', '{"streams": [...]}'),
        (b'{"streams": {}}', '{"streams": [...]}'),
        (b'{"streams": [1]}', "streams[1] is not an object"),
        (json.dumps({"streams": [{"values": [GOOD]}]}).encode(), "streams[1].stream"),
        (json.dumps({"streams": [{"stream": APP}]}).encode(), "streams[1].values"),
        (json.dumps({"streams": [stream({"a": 1}, GOOD)]}).encode(), "invalid labels"),
        (json.dumps({"streams": [stream({"a": None}, GOOD)]}).encode(), "invalid labels"),
        (json.dumps({"streams": [stream(APP, "x")]}).encode(), "values[0] must be"),
        (json.dumps({"streams": [stream(APP, ["1"])]}).encode(), "values[0] must be"),
        (json.dumps({"streams": [stream(APP, ["1", "x", {}, 4])]}).encode(), "must be"),
        (json.dumps({"streams": [stream(APP, [1, "x"])]}).encode(), "timestamp 1 is not"),
        (json.dumps({"streams": [stream(APP, ["12a", "x"])]}).encode(), "timestamp"),
        (json.dumps({"streams": [stream(APP, ["-1", "x"])]}).encode(), "timestamp"),
        (json.dumps({"streams": [stream(APP, ["1.5", "x"])]}).encode(), "timestamp"),
        (json.dumps({"streams": [stream(APP, ["", "x"])]}).encode(), "timestamp"),
        (json.dumps({"streams": [stream(APP, [str(2**63), "x"])]}).encode(), "timestamp"),
        (json.dumps({"streams": [stream(APP, ["1", 5])]}).encode(), "line must be a string"),
        (json.dumps({"streams": [stream(APP, ["1", "x", []])]}).encode(), "structured metadata"),
        (json.dumps({"streams": [stream(APP, ["1", "x", {"k": 1}])]}).encode(), "structured"),
    ],
)
def test_malformed_body_is_400_and_stores_nothing(
    loki: LokiRecorder, body: bytes, reason: str
) -> None:
    good = stream({"ok": "1"}, entry(now_ns(), "fine"))
    if body.startswith(b'{"streams": ['):  # a valid stream first: still nothing is stored
        body = body.replace(b'{"streams": [', b'{"streams": [' + json.dumps(good).encode() + b", ")

    response = post_raw(loki, body)

    assert response.status_code == 400
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert reason in response.text
    assert loki.streams() == {}
    assert loki.accepted == 0


# -- the contract: per-stream and per-entry 400s (the rest is kept) ------------------------------

LONG = "x" * 262_145
MANY = {f"l{i}": "v" for i in range(16)}


@pytest.mark.parametrize(
    ("labels", "offset_s", "line", "reason", "text"),
    [
        (MANY, 0, "x", "max_label_names_per_series", "has 16 label names; limit 15"),
        (APP, -8 * 86400, "x", "greater_than_max_sample_age", "has timestamp too old: "),
        (APP, 11 * 60, "x", "too_far_in_future", "has timestamp too new: "),
        (APP, 0, LONG, "line_too_long", "max entry size '262144' bytes exceeded for stream"),
    ],
)
def test_invalid_entry_is_400_with_loki_reason(
    loki: LokiRecorder,
    labels: dict[str, str],
    offset_s: float,
    line: str,
    reason: str,
    text: str,
) -> None:
    response = push(loki, stream(labels, entry(now_ns(offset_s), line)))

    assert response.status_code == 400
    assert response.text.startswith("entry for stream '{" if labels is not APP else "")
    assert text in response.text
    assert "errors like" not in response.text  # one refusal: Loki gives no count
    assert [r for r, _ in loki.rejections] == [reason]
    assert (loki.accepted, loki.rejected) == (0, 1)
    assert loki.streams() == {}


@pytest.mark.parametrize(
    ("labels", "character"),
    [({"1abc": "v"}, "1"), ({"a-b": "v"}, "-"), ({"": "v"}, "="), ({"é": "v"}, "é")],
)
def test_a_label_name_loki_cannot_parse_refuses_the_whole_push(
    loki: LokiRecorder, labels: dict[str, str], character: str
) -> None:
    response = push(
        loki, stream(APP, entry(now_ns(), "fine")), stream(labels, entry(now_ns(), "x"))
    )

    assert response.status_code == 400
    expected = (
        f"couldn't parse labels: parse error: unexpected character inside braces: {character!r}"
    )
    assert response.text == expected + "\n"
    assert loki.streams() == {}


def test_limits_are_inclusive(loki: LokiRecorder) -> None:
    fifteen = {f"l{i}": "v" for i in range(15)}
    response = push(
        loki,
        stream(fifteen, entry(now_ns(), "15 labels")),
        stream(APP, entry(now_ns(-6.9 * 86400), "old but fine")),
        stream(APP, entry(now_ns(9 * 60), "ahead but fine")),
        stream(APP, entry(now_ns(), "é" * 131_072)),  # 262 144 bytes of UTF-8
    )

    assert response.status_code == 204
    assert loki.accepted == 4


def test_line_size_counts_utf8_bytes(loki: LokiRecorder) -> None:
    response = push(loki, stream(APP, entry(now_ns(), "é" * 131_073)))

    assert response.status_code == 400
    assert "with length '262146' bytes" in response.text


def test_age_bounds_are_configurable_and_can_be_disabled() -> None:
    with LokiRecorder(reject_older_than=60, max_future=1) as strict:
        old = push(strict, stream(APP, entry(now_ns(-120), "2 min old")))
        ahead = push(strict, stream(APP, entry(now_ns(5), "5 s ahead")))
        assert (old.status_code, ahead.status_code) == (400, 400)
    with LokiRecorder(check_age=False, max_behind=None) as lax:
        historical = push(lax, stream(APP, entry(978_307_200 * 10**9, "2001"), entry(0, "1970")))
        future = push(lax, stream(APP, entry(now_ns(86400 * 365), "next year")))
        assert (historical.status_code, future.status_code) == (204, 204)
        assert lax.lines() == ["1970", "2001", "next year"]


def test_injected_clock_drives_the_age_checks() -> None:
    base = 1_700_000_000
    with LokiRecorder(clock=lambda: base) as loki:
        ok = push(loki, stream(APP, entry(base * 10**9, "then")))
        now = push(loki, stream(APP, entry(now_ns(), "now")))
        assert (ok.status_code, now.status_code) == (204, 400)


def test_an_entry_over_an_hour_behind_its_stream_is_refused_by_default(
    loki: LokiRecorder,
) -> None:
    ts = now_ns()
    response = push(loki, stream(APP, entry(ts, "new"), entry(ts - 3601 * 10**9, "behind")))

    assert response.status_code == 400
    assert "ignored, reason: 'entry too far behind, entry timestamp is: " in response.text
    assert response.text.endswith(
        f"total ignored: 1 out of 2 for stream: {stream_string(APP_KEY)}\n"
    )
    assert loki.lines() == ["new"]
    assert [r for r, _ in loki.rejections] == ["too_far_behind"]
    other = push(loki, stream({"app": "other"}, entry(ts - 3601 * 10**9, "own stream")))
    assert other.status_code == 204
    with LokiRecorder(max_behind=None) as lax:
        push(lax, stream(APP, entry(ts, "new"), entry(ts - 3601 * 10**9, "behind")))
        assert lax.lines() == ["behind", "new"]


def test_partial_acceptance_keeps_the_valid_entries(loki: LokiRecorder) -> None:
    ts = now_ns()
    old = [entry(now_ns(-30 * 86400) + i, f"too old {i}") for i in range(3)]
    response = push(
        loki,
        stream(APP, entry(ts, "one"), *old, entry(ts + 1, "two")),
        stream({"app": "other"}, entry(ts, "three")),
    )

    assert response.status_code == 400
    assert response.text.startswith(f"3 errors like: entry for stream '{stream_string(APP_KEY)}' ")
    assert "has timestamp too old: " in response.text
    assert "oldest acceptable timestamp is: " in response.text
    assert loki.lines(app="qc") == ["one", "two"]
    assert loki.lines() == ["one", "three", "two"]
    assert (loki.accepted, loki.rejected) == (3, 3)


def test_the_ingesters_refusal_hides_the_distributors(loki: LokiRecorder) -> None:
    ts = now_ns()
    push(loki, stream(APP, entry(ts, "new")))
    response = push(
        loki, stream(APP, entry(now_ns(-30 * 86400), "too old"), entry(ts - 7200 * 10**9, "behind"))
    )

    assert response.status_code == 400
    assert "too old" not in response.text
    assert "total ignored: 1 out of 1 for stream" in response.text
    assert loki.rejected == 2


def test_a_push_without_streams_is_422_and_empty_values_are_fine(loki: LokiRecorder) -> None:
    assert (push(loki).status_code, push(loki).text) == (422, NO_STREAMS + "\n")
    assert push(loki, stream(APP)).status_code == 204
    assert loki.streams() == {}


def test_a_push_over_the_ingestion_burst_is_429(loki: LokiRecorder) -> None:
    big = [entry(now_ns() + i, "x" * 200_000) for i in range(32)]  # 6.4 MB of lines

    response = push(loki, stream(APP, *big))

    assert response.status_code == 429
    assert "Ingestion rate limit exceeded" in response.text
    assert loki.streams() == {}


def test_service_name_is_added_and_empty_label_values_dropped(loki: LokiRecorder) -> None:
    ts = now_ns()
    push(
        loki,
        stream({"job": "j", "name": "n", "env": ""}, entry(ts, "a")),
        stream({"job": "j", "app": "a"}, entry(ts, "b")),
        stream({"job": "j"}, entry(ts, "c")),
        stream({"x": "1"}, entry(ts, "d")),
    )

    assert set(loki.streams()) == {
        frozenset({"job": "j", "name": "n", "service_name": "n"}.items()),
        frozenset({"job": "j", "app": "a", "service_name": "a"}.items()),
        frozenset({"job": "j", "service_name": "j"}.items()),
        frozenset({"x": "1", "service_name": "unknown_service"}.items()),
    }


# -- dedupe ------------------------------------------------------------------------------------


def test_identical_ts_and_line_are_dropped_while_in_the_open_block(loki: LokiRecorder) -> None:
    ts = now_ns()
    batch = stream(APP, entry(ts, "same"), entry(ts + 1, "next"))

    first, second = push(loki, batch), push(loki, batch)
    within = push(loki, stream(APP, entry(ts + 2, "dup"), entry(ts + 2, "dup")))

    assert (first.status_code, second.status_code, within.status_code) == (204, 204, 204)
    assert loki.entries(**APP) == [(ts, "same"), (ts + 1, "next"), (ts + 2, "dup")]
    assert loki.duplicates_dropped == 3
    assert loki.same_ts_different_line == 0
    assert loki.accepted == 3


def test_dedupe_ignores_structured_metadata(loki: LokiRecorder) -> None:
    ts = now_ns()
    push(loki, stream(APP, entry(ts, "x", {"k": "1"})))
    push(loki, stream(APP, entry(ts, "x", {"k": "2"})))

    assert loki.metadata() == [(ts, "x", {"k": "1"})]
    assert loki.duplicates_dropped == 1


def test_same_ts_different_line_is_kept_and_counted(loki: LokiRecorder) -> None:
    ts = now_ns()
    response = push(loki, stream(APP, entry(ts, "first"), entry(ts, "second")))

    assert response.status_code == 204
    assert loki.lines() == ["first", "second"]
    assert loki.same_ts_different_line == 1
    assert loki.duplicates_dropped == 0


def test_streams_are_told_apart_by_their_exact_label_set(loki: LokiRecorder) -> None:
    ts = now_ns()
    push(loki, stream(APP, entry(ts, "x")), stream(APP | {"level": "ERROR"}, entry(ts, "x")))

    assert len(loki.streams()) == 2
    assert loki.lines(app="qc") == ["x", "x"]
    assert loki.count(app="qc") == 2
    assert loki.lines(level="ERROR") == ["x"]
    assert loki.lines(app="nope") == []
    assert (loki.duplicates_dropped, loki.same_ts_different_line) == (0, 0)


def test_a_copy_out_of_the_open_block_is_stored_again_and_counted(loki: LokiRecorder) -> None:
    ts = now_ns()
    first = [entry(ts + i, f"{i:03d} " + "x" * 1000) for i in range(300)]  # 300 kB: a cut
    push(loki, stream(APP, *first))

    push(loki, stream(APP, *first))  # pushed again: the cut block's entries are stored again

    assert loki.lines() == [value[1] for value in first]  # a log query hides the copies
    assert loki.count(app="qc") == 300 + loki.copies_stored  # a metric query counts them
    assert loki.copies_stored > 0
    assert loki.copies_stored + loki.duplicates_dropped == 300


def test_after_a_flush_every_entry_pushed_again_is_stored_again(loki: LokiRecorder) -> None:
    ts = now_ns()
    batch = stream(APP, entry(ts, "a"), entry(ts + 1, "b"))
    push(loki, batch)
    loki.flush()

    push(loki, batch)

    assert (loki.lines(), loki.count(), loki.copies_stored) == (["a", "b"], 4, 2)


# -- queries -----------------------------------------------------------------------------------


def query(loki: LokiRecorder, selector: str, **params: object) -> requests.Response:
    url = loki.base_url + "/loki/api/v1/query_range"
    return requests.get(url, params={"query": selector, **params}, timeout=5)


def test_query_range_backward_limit_1_is_the_newest_entry_in_the_span(loki: LokiRecorder) -> None:
    ts = now_ns()
    push(loki, stream(APP, *(entry(ts + i, f"l{i}") for i in range(10))))
    push(loki, stream({"app": "qc", "deploy": "L-2"}, entry(ts + 5, "other")))

    found = query(
        loki, '{app="qc", deploy="L-1"}', direction="backward", limit=1, start=ts + 2, end=ts + 7
    )
    nothing = query(loki, '{app="qc", deploy="L-1"}', limit=1, start=ts + 20, end=ts + 30)
    forward = query(loki, '{deploy="L-1"}', direction="forward", limit=3, start=ts, end=ts + 100)

    assert found.status_code == 200
    assert found.json() == {
        "status": "success",
        "data": {
            "resultType": "streams",
            "result": [{"stream": dict(APP_KEY), "values": [[str(ts + 6), "l6"]]}],
        },
    }
    assert nothing.json()["data"]["result"] == []
    assert [v[1] for v in forward.json()["data"]["result"][0]["values"]] == ["l0", "l1", "l2"]
    assert loki.queries == 3


def test_query_selector_values_may_hold_quotes_and_backslashes(loki: LokiRecorder) -> None:
    labels = {"job": 'a"b\\c'}
    push(loki, stream(labels, entry(now_ns(), "x")))

    found = query(loki, '{job="a\\"b\\\\c"}', start=0)

    assert [s["stream"]["job"] for s in found.json()["data"]["result"]] == ['a"b\\c']
    assert query(loki, "{job=}").status_code == 400


@pytest.mark.parametrize("status", [403, 404])
def test_queries_can_be_refused_like_a_push_only_endpoint(status: int) -> None:
    with LokiRecorder(refuse_queries=status) as loki:
        assert query(loki, '{app="qc"}').status_code == status
        assert push(loki, stream(APP, entry(now_ns(), "x"))).status_code == 204


def test_queries_need_the_same_credentials_as_pushes() -> None:
    with LokiRecorder(require_auth="Bearer xyz") as loki:
        assert query(loki, '{app="qc"}').status_code == 401


# -- inspection --------------------------------------------------------------------------------


def test_lines_are_sorted_by_timestamp_and_stable(loki: LokiRecorder) -> None:
    ts = now_ns()
    push(loki, stream(APP, entry(ts + 3, "c"), entry(ts + 1, "a")))
    push(loki, stream({"app": "qc", "deploy": "L-2"}, entry(ts + 2, "b1")))
    push(loki, stream(APP, entry(ts + 2, "b2")))

    assert loki.lines(app="qc") == ["a", "b1", "b2", "c"]
    assert loki.entries(deploy="L-1") == [(ts + 1, "a"), (ts + 2, "b2"), (ts + 3, "c")]
    arrival = loki.streams()[APP_KEY]
    assert arrival == [(ts + 3, "c"), (ts + 1, "a"), (ts + 2, "b2")]


def test_stream_string_looks_like_loki() -> None:
    assert stream_string({"b": "2", "a": 'q"'}) == '{a="q\\"", b="2"}'


def test_wait_for_lines_and_reset(loki: LokiRecorder) -> None:
    threading.Timer(0.05, push, (loki, stream(APP, entry(now_ns(), "late")))).start()

    assert loki.wait_for_lines(1, timeout=5, app="qc") == ["late"]
    with pytest.raises(TimeoutError):
        loki.wait_for_lines(2, timeout=0.05)
    loki.reset()
    assert (loki.streams(), loki.pushes, loki.requests) == ({}, 0, [])


def test_concurrent_pushes_are_all_counted(loki: LokiRecorder) -> None:
    def worker(n: int) -> None:
        with requests.Session() as session:
            for i in range(10):
                ts = now_ns()
                push(loki, stream({"w": str(n)}, entry(ts, f"{n}-{i}")), session=session)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (loki.pushes, loki.accepted) == (60, 60)
    assert len(loki.streams()) == 6


# -- faults ------------------------------------------------------------------------------------


def test_scripted_http_faults_store_nothing(loki: LokiRecorder) -> None:
    loki.faults.script(["429", "500", "503", "400"], retry_after=1)
    batch = stream(APP, entry(now_ns(), "x"))

    with requests.Session() as session:
        responses = [push(loki, batch, session=session) for _ in range(5)]

    assert [r.status_code for r in responses] == [429, 500, 503, 400, 204]
    assert responses[0].headers["Retry-After"] == "1"
    assert "Ingestion rate limit exceeded" in responses[0].text
    assert responses[2].headers["Retry-After"] == "1"
    assert "Retry-After" not in responses[1].headers
    assert loki.lines() == ["x"]
    assert loki.faults_injected == 4
    assert [status for status, _ in loki.requests] == [429, 500, 503, 400, 204]
    assert loki.faults.pending == 0
    assert len(set(loki.bodies)) == 1  # the client re-sent the same payload


def test_script_can_let_pushes_through_and_rejects_unknown_kinds(loki: LokiRecorder) -> None:
    loki.faults.script(["ok", "500"])
    batch = stream(APP, entry(now_ns(), "x"))

    assert [push(loki, batch).status_code for _ in range(3)] == [204, 500, 204]
    with pytest.raises(ValueError, match="unknown fault kind"):
        loki.faults.script(["418"])


def test_reset_fault_closes_without_answering(loki: LokiRecorder) -> None:
    loki.faults.script(["reset"])
    batch = stream(APP, entry(now_ns(), "x"))

    with pytest.raises(requests.exceptions.ConnectionError):
        push(loki, batch)

    assert loki.streams() == {}
    assert loki.requests[0][0] == 0
    assert push(loki, batch).status_code == 204
    assert loki.faults_injected == 1


def test_lost_fault_stores_the_push_then_resets_without_answering(loki: LokiRecorder) -> None:
    loki.faults.script(["lost"])

    with pytest.raises(requests.exceptions.ConnectionError):
        push(loki, stream(APP, entry(now_ns(), "x")))

    assert loki.lines() == ["x"]
    assert loki.requests[0][0] == 0


def test_slow_fault_answers_late_and_still_stores() -> None:
    with LokiRecorder(slow_seconds=0.3) as loki:
        loki.faults.script(["slow", "slow"])
        batch = stream(APP, entry(now_ns(), "x"))

        with pytest.raises(requests.exceptions.ReadTimeout):
            push(loki, batch, timeout=0.1)
        assert loki.wait_for_lines(1, timeout=2) == ["x"]  # stored although the client gave up

        started = time.monotonic()
        assert push(loki, batch).status_code == 204  # the retry: a silent duplicate
        assert time.monotonic() - started >= 0.3
        assert (loki.accepted, loki.duplicates_dropped, loki.faults_injected) == (1, 1, 2)


def test_slow_fault_default_is_two_seconds() -> None:
    assert LokiRecorder().slow_seconds == 2.0


def test_random_faults_are_seeded() -> None:
    def statuses(seed: int) -> list[int]:
        with LokiRecorder() as loki:
            loki.faults.random(0.5, ["429", "500", "503"], seed=seed)
            batch = stream(APP, entry(now_ns(), "x"))
            with requests.Session() as session:
                return [push(loki, batch, session=session).status_code for _ in range(20)]

    first, again = statuses(3), statuses(3)

    assert first == again
    assert {204, 429, 500, 503} >= set(first)
    assert 2 < first.count(204) < 18


def test_random_faults_rate_one_and_clear(loki: LokiRecorder) -> None:
    loki.faults.random(1.0, ["503"], seed=1)
    batch = stream(APP, entry(now_ns(), "x"))

    assert push(loki, batch).status_code == 503
    loki.faults.clear()
    assert push(loki, batch).status_code == 204
    with pytest.raises(ValueError):
        loki.faults.random(1.5)
    assert set(FAULT_KINDS) == {"429", "500", "503", "400", "reset", "slow", "lost"}


def test_outage_answers_503_until_it_ends(loki: LokiRecorder) -> None:
    loki.faults.script(["500"])
    batch = stream(APP, entry(now_ns(), "x"))
    loki.outage(True)

    assert [push(loki, batch).status_code for _ in range(3)] == [503, 503, 503]
    assert loki.streams() == {}
    loki.outage(False)
    assert push(loki, batch).status_code == 500  # the script waited out the outage
    assert push(loki, batch).status_code == 204
    assert (loki.pushes, loki.faults_injected) == (5, 4)


# -- tenant and auth ---------------------------------------------------------------------------


def test_tenant_and_authorization_are_recorded(loki: LokiRecorder) -> None:
    batch = stream(APP, entry(now_ns(), "x"))
    push(loki, batch, headers={"X-Scope-OrgID": "team-a"})
    requests.post(loki.url, json={"streams": [batch]}, auth=("user", "pw"), timeout=5)
    push(loki, batch, headers={"Authorization": "Bearer abc"})

    assert loki.tenants == ["team-a", None, None]
    assert loki.authorizations == [None, "Basic dXNlcjpwdw==", "Bearer abc"]


def test_required_auth_refuses_others_with_401() -> None:
    with LokiRecorder(require_auth="Bearer xyz") as loki:
        batch = stream(APP, entry(now_ns(), "x"))
        missing = push(loki, batch)
        wrong = push(loki, batch, headers={"Authorization": "Bearer nope"})
        right = push(loki, batch, headers={"Authorization": "Bearer xyz"})

        assert [missing.status_code, wrong.status_code, right.status_code] == [401, 401, 204]
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert loki.lines() == ["x"]


def test_required_tenant_refuses_a_push_without_org_id() -> None:
    with LokiRecorder(require_tenant=True) as loki:
        batch = stream(APP, entry(now_ns(), "x"))
        missing = push(loki, batch)
        assert missing.status_code == 401
        assert missing.text == "no org id\n"
        assert push(loki, batch, headers={"X-Scope-OrgID": "t"}).status_code == 204

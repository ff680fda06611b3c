"""The QuantConnect API emulator, spoken to over real HTTP on loopback."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import re
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tailer.emulator import Emulator, Scenery, serve

USER, TOKEN = 1234, "secret-token"
FROZEN = 1_700_000_000.0
# sha256("secret-token:1700000000"), then base64("1234:" + that hex digest), computed by hand.
VECTOR_HASH = "efd1a989a3eb6a91d45f65c1ab644c8461309bb49925e3e6170f3e8fba191859"
VECTOR_AUTH = (
    "Basic MTIzNDplZmQxYTk4OWEzZWI2YTkxZDQ1ZjY1YzFhYjY0NGM4NDYxMzA5YmI0OTkyNWUzZTYxNzBmM2U4"
    "ZmJhMTkxODU5"
)
UTC_TEXT = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def signed(when: float | None = None, user: int = USER, token: str = TOKEN) -> dict[str, str]:
    stamp = str(int(time.time() if when is None else when))
    digest = hashlib.sha256(f"{token}:{stamp}".encode()).hexdigest()
    basic = base64.b64encode(f"{user}:{digest}".encode()).decode()
    return {"Timestamp": stamp, "Authorization": f"Basic {basic}"}


class Client:
    """A kept-alive session that signs every request like qc-tail does."""

    def __init__(self, emu: Emulator, when: Callable[[], float] = time.time) -> None:
        self.emu, self.when, self.session = emu, when, requests.Session()

    def post(self, path: str, body: Any = None, **headers: str) -> requests.Response:
        sent = {**signed(self.when()), **headers}
        return self.session.post(self.emu.base_url + path, json=body, headers=sent, timeout=10)

    def logs(self, project: int, deploy: str, start: int, end: int) -> dict[str, Any]:
        body = {"format": "json", "projectId": project, "algorithmId": deploy}
        answer: dict[str, Any] = self.post(
            "/live/logs/read", {**body, "startLine": start, "endLine": end}
        ).json()
        return answer


@pytest.fixture
def make() -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def factory(**options: Any) -> Emulator:
        emu = Emulator(USER, TOKEN, **options).start()
        started.append(emu)
        return emu

    yield factory
    for emu in started:
        emu.stop()


@pytest.fixture
def emu(make: Callable[..., Emulator]) -> Emulator:
    return make()


@pytest.fixture
def client(emu: Emulator) -> Client:
    return Client(emu)


def test_known_vector_is_accepted(make: Callable[..., Emulator]) -> None:
    emu = make(clock=lambda: FROZEN)
    assert hashlib.sha256(b"secret-token:1700000000").hexdigest() == VECTOR_HASH
    headers = {"Timestamp": "1700000000", "Authorization": VECTOR_AUTH}
    answer = requests.post(emu.base_url + "/authenticate", json={}, headers=headers, timeout=5)
    assert (answer.status_code, answer.json()) == (200, {"success": True, "errors": []})
    assert signed(FROZEN) == headers


@pytest.mark.parametrize(
    ("shape", "status", "body"),
    [
        ("401", 401, b'{"success":false,"errors":["Unauthorized"]}'),
        ("hash", 200, b'{"success":false,"errors":["Hash doesn\'t match."]}'),
        ("userid", 200, b'{"success":false,"errors":["UserID not valid"]}'),
        ("empty500", 500, b""),
    ],
)
def test_auth_failure_shapes(
    make: Callable[..., Emulator], shape: str, status: int, body: bytes
) -> None:
    emu = make(auth_failure=shape)
    answer = Client(emu).post("/authenticate", {}, **signed(token="wrong"))
    assert (status, body) == (answer.status_code, answer.content)
    assert ("WWW-Authenticate" in answer.headers) == (shape == "401")
    if shape == "401":
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="QuantConnect"'
    assert emu.stats.auth_failures == 1


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-7200, True), (-7201, False), (-90_000, False), (300, True), (301, False)],
)
def test_timestamp_must_be_recent(
    make: Callable[..., Emulator], offset: int, accepted: bool
) -> None:
    emu = make(clock=lambda: FROZEN)
    answer = Client(emu, when=lambda: FROZEN + offset).post("/authenticate", {})
    assert (200 if accepted else 401) == answer.status_code


@pytest.mark.parametrize(
    "headers",
    [
        {"Timestamp": "", "Authorization": ""},
        {"Timestamp": "soon"},
        {"Authorization": "Basic !!!not-base64"},
        signed(user=999),
    ],
)
def test_malformed_or_foreign_credentials_are_refused(
    client: Client, headers: dict[str, str]
) -> None:
    assert client.post("/authenticate", {}, **headers).status_code == 401


def test_skewed_clock_refuses_local_time_and_dates_its_answers(
    make: Callable[..., Emulator],
) -> None:
    emu = make(skew=-10_000)
    refused = Client(emu).post("/authenticate", {})
    assert refused.status_code == 401
    served = parsedate_to_datetime(refused.headers["Date"]).timestamp()
    assert abs(served - (time.time() - 10_000)) < 5
    assert Client(emu, when=lambda: time.time() - 10_000).post("/authenticate").ok


def test_answers_keep_the_connection_alive_with_date_and_length(emu: Emulator) -> None:
    url = urlsplit(emu.base_url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port)
    for _ in range(3):
        connection.request("POST", url.path + "/authenticate", b"{}", signed())
        answer = connection.getresponse()
        body = answer.read()
        assert (200, str(len(body))) == (answer.status, answer.getheader("Content-Length"))
        assert answer.getheader("Date") and not answer.will_close
    connection.close()
    assert emu.stats.requests == 3


def test_unknown_path_is_404_json(client: Client) -> None:
    answer = client.post("/live/nope", {})
    assert (answer.status_code, answer.json()["success"]) == (404, False)


def test_malformed_json_is_refused_politely(client: Client) -> None:
    answer = client.session.post(client.emu.base_url + "/live/read", data=b"{", headers=signed())
    assert (answer.status_code, answer.json()["success"]) == (200, False)
    assert "Malformed JSON" in answer.json()["errors"][0]


@pytest.mark.parametrize("missing", ["projectId", "algorithmId", "startLine", "endLine"])
def test_missing_field_is_named(client: Client, emu: Emulator, missing: str) -> None:
    emu.add_project(1, "p")
    body = {"projectId": 1, "algorithmId": emu.deploy(1), "startLine": 0, "endLine": 1}
    del body[missing]
    answer = client.post("/live/logs/read", body).json()
    assert answer["success"] is False and missing in answer["errors"][0]


def _three_deployments(emu: Emulator) -> tuple[str, str, str]:
    emu.add_project(1, "alpha")
    emu.add_project(2, "beta")
    first = emu.deploy(1)
    emu.write(1, ["a0", "a1", "a2", "a3", "a4"])
    other = emu.deploy(2)
    emu.write(2, ["c0", "c1", "c2", "c3"])
    second = emu.deploy(1)
    emu.write(1, ["b0", "b1", "b2"])
    return first, second, other


def test_lines_are_numbered_project_wide(client: Client, emu: Emulator) -> None:
    first, second, other = _three_deployments(emu)
    assert emu.visible(1) == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]
    whole = client.logs(1, second, 0, 100)
    assert (whole["logs"], whole["length"], whole["deploymentOffset"]) == (emu.visible(1), 8, 5)
    straddling = client.logs(1, first, 3, 7)
    assert (straddling["logs"], straddling["deploymentOffset"]) == (["a3", "a4", "b0", "b1"], 0)
    beta = client.logs(2, other, 1, 3)
    assert (beta["logs"], beta["length"], beta["deploymentOffset"]) == (["c1", "c2"], 4, 0)
    assert [emu.deployment_offset(1, first), emu.deployment_offset(1, second), 8] == [0, 5, 8]


def test_query_filters_by_keyword_in_any_case_numbering_the_matches(
    client: Client, emu: Emulator
) -> None:
    emu.add_project(1, "alpha")
    first = emu.deploy(1)
    emu.write(1, ["ORDER filled 1", "debug", "order filled 2"])
    second = emu.deploy(1)
    emu.write(1, ["heartbeat", "Reorder check", "order filled 3"])
    body = {"format": "json", "projectId": 1, "algorithmId": second, "query": "Order"}
    answer = client.post("/live/logs/read", {**body, "startLine": 1, "endLine": 3}).json()
    # start and end index the matching rows of the whole project; the offset counts all rows
    assert (answer["logs"], answer["length"], answer["deploymentOffset"]) == (
        ["order filled 2", "Reorder check"],
        4,
        3,
    )
    older = client.post(
        "/live/logs/read", {**body, "algorithmId": first, "startLine": 0, "endLine": 9}
    ).json()
    assert (len(older["logs"]), older["deploymentOffset"]) == (4, 0)
    wrong = client.post("/live/logs/read", {**body, "query": 5, "startLine": 0, "endLine": 9})
    assert wrong.json()["success"] is False


def test_reading_past_the_end_is_empty_success(client: Client, emu: Emulator) -> None:
    _, second, _ = _three_deployments(emu)
    answer = client.logs(1, second, 8, 20)
    assert (answer["success"], answer["logs"], answer["length"]) == (True, [], 8)


@pytest.mark.parametrize(
    ("project", "which", "error"),
    [(99, 0, "Project not found"), (1, 2, "not found"), (2, 0, "not found")],
)
def test_unknown_project_or_foreign_deployment(
    client: Client, emu: Emulator, project: int, which: int, error: str
) -> None:
    deploys = _three_deployments(emu)
    answer = client.logs(project, deploys[which], 0, 5)
    assert answer["success"] is False and error in answer["errors"][0]


@pytest.mark.parametrize(("start", "end"), [(-1, 5), (5, 4), (0, -1)])
def test_nonsense_windows_are_refused(client: Client, emu: Emulator, start: int, end: int) -> None:
    _, second, _ = _three_deployments(emu)
    assert client.logs(1, second, start, end)["success"] is False


@pytest.mark.parametrize("limit", [250, 10])
def test_window_limit_is_refused_and_counted(make: Callable[..., Emulator], limit: int) -> None:
    """By default a window may hold up to ``max_window`` rows, as the current docs say."""
    emu = make(max_window=limit)
    client = Client(emu)
    emu.add_project(1, "p")
    deploy = emu.deploy(1)
    emu.write(1, [str(i) for i in range(1000)])
    assert len(client.logs(1, deploy, 100, 100 + limit)["logs"]) == limit
    assert emu.stats.oversized_windows == 0
    refused = client.logs(1, deploy, 100, 100 + limit + 1)
    expected = {"success": False, "errors": [f"Log lines can be read in pages up to {limit} lines"]}
    assert expected == refused
    assert (1, limit + 1) == (emu.stats.oversized_windows, emu.stats.max_window_seen)


def test_the_strict_window_rule_refuses_a_window_of_max_window_rows(
    make: Callable[..., Emulator],
) -> None:
    """The older text: a window "must be smaller than 250"."""
    emu = make(strict_window=True)
    client = Client(emu)
    emu.add_project(1, "p")
    deploy = emu.deploy(1)
    emu.write(1, [str(i) for i in range(1000)])
    assert len(client.logs(1, deploy, 100, 349)["logs"]) == 249
    refused = client.logs(1, deploy, 100, 350)
    expected = {"success": False, "errors": ["The page size must be smaller than 250 lines"]}
    assert expected == refused
    assert emu.stats.oversized_windows == 1


@pytest.mark.parametrize("past_end", ["empty", "error"])
def test_a_read_at_or_past_the_end_answers_no_rows_or_an_out_of_range_error(
    make: Callable[..., Emulator], past_end: str
) -> None:
    emu = make(past_end=past_end)
    client = Client(emu)
    emu.add_project(1, "p")
    deploy = emu.deploy(1)
    emu.write(1, ["a", "b"])
    assert client.logs(1, deploy, 1, 5)["logs"] == ["b"]
    for start in (2, 7):
        answer = client.logs(1, deploy, start, start + 1)
        if past_end == "empty":
            assert (answer["success"], answer["logs"], answer["length"]) == (True, [], 2)
        else:
            error = f"startLine {start} is out of range: the log has 2 lines"
            assert {"success": False, "errors": [error]} == answer


def test_absolute_numbers_keep_the_rows_left_in_place_and_short_windows_below_them(
    make: Callable[..., Emulator],
) -> None:
    emu = make(absolute_numbers=True)
    client = Client(emu)
    emu.add_project(1, "p")
    first = emu.deploy(1)
    emu.write(1, [f"a{i}" for i in range(10)])
    second = emu.deploy(1)
    emu.write(1, [f"b{i}" for i in range(10)])
    emu.trim(1, 13)  # all of the first deployment's rows, and three of the second's
    answer = client.logs(1, second, 8, 16)
    assert answer["logs"] == ["b3", "b4", "b5"]  # rows 8..12 are gone, 13.. keep their numbers
    assert (answer["length"], answer["deploymentOffset"]) == (20, 10)
    assert client.logs(1, first, 0, 5)["logs"] == []
    assert emu.visible(1) == [f"b{i}" for i in range(3, 10)]


def test_renumbering_is_the_default(make: Callable[..., Emulator]) -> None:
    emu = make()
    client = Client(emu)
    emu.add_project(1, "p")
    emu.deploy(1)
    emu.write(1, [f"a{i}" for i in range(10)])
    second = emu.deploy(1)
    emu.write(1, [f"b{i}" for i in range(10)])
    emu.trim(1, 13)
    answer = client.logs(1, second, 0, 3)
    assert (answer["logs"], answer["length"], answer["deploymentOffset"]) == (
        ["b3", "b4", "b5"],
        7,
        0,
    )


def test_bare_answers_have_no_errors_field_null_logs_and_unknown_fields(
    make: Callable[..., Emulator],
) -> None:
    emu = make(bare_answers=True)
    client = Client(emu)
    emu.add_project(1, "p")
    deploy = emu.deploy(1)
    answer = client.logs(1, deploy, 0, 10)
    assert answer["logs"] is None and "errors" not in answer
    assert set(answer) - {"success", "logs", "length", "deploymentOffset"}
    emu.write(1, ["a"])
    assert client.logs(1, deploy, 0, 10)["logs"] == ["a"]


def test_written_lines_wait_for_a_snapshot(make: Callable[..., Emulator]) -> None:
    emu = make(publish_interval=3600)
    emu.add_project(1, "p")
    deploy = emu.deploy(1)
    emu.write(1, ["one", "two"])
    assert (Client(emu).logs(1, deploy, 0, 10)["length"], emu.visible(1)) == (0, [])
    emu.publish(1)
    assert Client(emu).logs(1, deploy, 0, 10)["logs"] == ["one", "two"]


def test_periodic_snapshots_publish_on_their_own(make: Callable[..., Emulator]) -> None:
    emu = make(publish_interval=0.05)
    emu.add_project(1, "p")
    emu.deploy(1)
    emu.write(1, ["soon"])
    deadline = time.monotonic() + 5
    while not emu.visible(1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert emu.visible(1) == ["soon"]


def test_snapshot_intervals_are_jittered_reproducibly_by_the_seed() -> None:
    drawn = [
        Emulator(USER, TOKEN, publish_interval=100, publish_jitter=0.8, seed=7) for _ in range(2)
    ]
    first, second = ([emu.next_snapshot() for _ in range(200)] for emu in drawn)
    assert first == second
    assert 20 <= min(first) < 30 and 170 < max(first) <= 180
    assert Emulator(USER, TOKEN, publish_interval=60).next_snapshot() == 60


def test_stamped_snapshots_say_when_they_were_published(make: Callable[..., Emulator]) -> None:
    emu = make(publish_interval=0.05, publish_stamp=True, clock=lambda: 1_780_000_000.25)
    emu.add_project(1, "p")
    emu.deploy(1)
    deadline = time.monotonic() + 5
    while not emu.visible(1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert emu.visible(1)[0] == "2026-05-28 20:26:40 snapshot published 1780000000.250"


def test_late_lines_of_a_stopped_deployment_shift_the_next_offset(
    make: Callable[..., Emulator],
) -> None:
    emu = make(publish_interval=3600)
    client = Client(emu)
    emu.add_project(1, "p")
    old = emu.deploy(1)
    emu.write(1, ["old 1"])
    emu.publish()
    emu.write(1, ["old late"])
    new = emu.deploy(1)
    emu.write(1, ["new 1"], deploy_id=new)
    emu.publish(1)
    assert (emu.visible(1), emu.deployment_offset(1, new)) == (["old 1", "old late", "new 1"], 2)
    emu.write(1, ["old later still"], deploy_id=old)
    emu.publish()
    answer = client.logs(1, new, 0, 10)
    assert (answer["deploymentOffset"], answer["length"]) == (3, 4)
    assert answer["logs"] == ["old 1", "old late", "old later still", "new 1"]


def test_trimming_shifts_numbers_and_clamps_offsets(make: Callable[..., Emulator]) -> None:
    emu = make(max_lines=8)
    client = Client(emu)
    emu.add_project(1, "p")
    first = emu.deploy(1)
    emu.write(1, [f"a{i}" for i in range(5)])
    second = emu.deploy(1)
    emu.write(1, [f"b{i}" for i in range(6)])
    answer = client.logs(1, second, 0, 3)
    assert (
        answer["logs"],
        answer["length"],
        answer["deploymentOffset"],
    ) == (["a3", "a4", "b0"], 8, 2)
    emu.trim(1, 3)
    assert (
        emu.deployment_offset(1, second),
        emu.length(1),
        emu.visible(1)[:2],
    ) == (0, 5, ["b1", "b2"])
    assert [f"a{i}" for i in range(5)] == emu.published(1, first)
    assert [f"b{i}" for i in range(6)] == emu.published(1, second)


def test_a_late_line_does_not_bring_back_a_trimmed_one(make: Callable[..., Emulator]) -> None:
    """Retention went past the first deployment's end into the second's; a late line of the
    first then appears at the front (the oldest row). What was removed stays removed."""
    emu = make(publish_interval=3600)
    client = Client(emu)
    emu.add_project(1, "p")
    first = emu.deploy(1)
    second = emu.deploy(1)
    emu.write(1, ["b0", "b1", "b2"], deploy_id=second)
    emu.publish()
    emu.trim(1, 1)
    emu.write(1, ["a late"], deploy_id=first)
    emu.publish()
    answer = client.logs(1, second, 0, 10)
    assert (answer["logs"], answer["length"], answer["deploymentOffset"]) == (
        ["a late", "b1", "b2"],
        3,
        1,
    )
    assert (emu.trimmed(1, first), emu.trimmed(1, second)) == (0, 1)
    emu.trim(1, 2)
    assert (emu.visible(1), emu.deployment_offset(1, second)) == (["b2"], 0)
    assert (emu.trimmed(1, first), emu.trimmed(1, second)) == (1, 2)


def test_live_read_describes_the_latest_deployment(client: Client, emu: Emulator) -> None:
    emu.add_project(1, "alpha")
    assert (
        "No live deployment found"
        in client.post("/live/read", {"projectId": 1}).json()["errors"][0]
    )
    assert "Project not found" in client.post("/live/read", {"projectId": 2}).json()["errors"][0]
    deploy = emu.deploy(1)
    running = client.post("/live/read", {"projectId": 1}).json()
    assert (True, deploy, "Running", None) == (
        running["success"],
        running["deployId"],
        running["status"],
        running["stopped"],
    )
    assert (
        running["projectName"],
        running["brokerage"],
        running["projectId"],
    ) == ("alpha", "PaperBrokerage", 1)
    assert UTC_TEXT.match(running["launched"])
    emu.stop_deployment(1, "Liquidated")
    stopped = client.post("/live/read", {"projectId": 1}).json()
    assert stopped["status"] == "Liquidated" and UTC_TEXT.match(stopped["stopped"])


def test_live_list_filters_every_deployment_in_launch_order(client: Client, emu: Emulator) -> None:
    first, second, other = _three_deployments(emu)
    assert re.fullmatch(r"L-[0-9a-f]{32}", first)
    every = client.post("/live/list", {}).json()["live"]
    assert [first, other, second] == [d["deployId"] for d in every]
    assert [d["status"] for d in every] == ["Stopped", "Running", "Running"]
    running = client.post("/live/list", {"status": "Running", "projectId": 1}).json()["live"]
    assert [second] == [d["deployId"] for d in running]
    stopped = client.post("/live/list", {"status": "Stopped"}).json()["live"]
    assert [(1, first, "alpha")] == [
        (d["projectId"], d["deployId"], d["projectName"]) for d in stopped
    ]
    assert client.post("/live/list", {"status": "Deleted"}).json()["success"] is False


def test_a_stale_live_read_names_the_previous_deployment_as_often_as_asked(
    client: Client, emu: Emulator
) -> None:
    first, second, other = _three_deployments(emu)
    emu.stale_live_read(1, answers=2)
    emu.stale_live_read(2)  # a project with one deployment has no older one to name
    named = [client.post("/live/read", {"projectId": 1}).json()["deployId"] for _ in range(3)]
    assert named == [first, first, second]
    assert client.post("/live/read", {"projectId": 2}).json()["deployId"] == other


def test_a_stale_read_rate_lags_that_share_of_live_read_answers(
    make: Callable[..., Emulator],
) -> None:
    emu = make(stale_read_rate=0.5)
    first, second, _ = _three_deployments(emu)
    client = Client(emu)
    named = [client.post("/live/read", {"projectId": 1}).json()["deployId"] for _ in range(40)]
    assert set(named) == {first, second}


def test_a_list_that_ignores_project_id_answers_every_projects_deployments(
    make: Callable[..., Emulator],
) -> None:
    emu = make(list_ignores_project=True)
    first, second, other = _three_deployments(emu)
    listed = Client(emu).post("/live/list", {"projectId": 1}).json()["live"]
    assert [first, other, second] == [d["deployId"] for d in listed]
    running = Client(emu).post("/live/list", {"status": "Running", "projectId": 1}).json()
    assert [other, second] == [d["deployId"] for d in running["live"]]


def test_projects_read(client: Client, emu: Emulator) -> None:
    emu.add_project(1, "alpha")
    emu.add_project(2, "beta")
    every = client.post("/projects/read", {}).json()["projects"]
    assert [(p["projectId"], p["name"]) for p in every] == [(1, "alpha"), (2, "beta")]
    one = client.post("/projects/read", {"projectId": 2}).json()["projects"]
    assert one == [{"projectId": 2, "name": "beta", "organizationId": "org", "language": "Py"}]


def test_deploy_ids_are_reproducible_from_the_seed() -> None:
    def ids(seed: int) -> list[str]:
        emu = Emulator(USER, TOKEN, seed=seed)
        emu.add_project(1, "p")
        return [emu.deploy(1) for _ in range(3)]

    assert ids(5) == ids(5) != ids(6)


def test_a_full_project_reads_fast(
    client: Client, emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 100,000-line project read window by window: each answer leaves the emulator in one
    write (so Nagle's algorithm and the client's delayed ACK add no pause to it), and
    serving a window costs that window, not a copy of the project."""
    emu.add_project(1, "big")
    emu.deploy(1)
    emu.write(1, [f"2024-01-02 10:00:00 line {i}" for i in range(60_000)])
    deploy = emu.deploy(1)
    emu.write(1, [f"2024-01-03 10:00:00 line {i}" for i in range(60_000)])
    assert emu.length(1) == 100_000
    port = urlsplit(emu.base_url).port
    writes = 0
    sendall = socket.socket.sendall

    def counted(sock: socket.socket, data: Any, *args: Any) -> None:
        nonlocal writes
        if sock.getsockname()[1] == port:  # the emulator's end of the connection
            writes += 1
        sendall(sock, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", counted)
    tracemalloc.start()
    try:
        peak = 0
        for i in range(0, 400, 8):
            tracemalloc.reset_peak()
            answer = client.logs(1, deploy, i * 249, i * 249 + 249)
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            row = i * 249  # the oldest 20,000 rows trimmed: 40,000 of the first deployment left
            first = (
                f"02 10:00:00 line {row + 20_000}"
                if row < 40_000
                else f"03 10:00:00 line {row - 40_000}"
            )
            assert answer["logs"][0] == f"2024-01-{first}"
            assert len(answer["logs"]) == 249
    finally:
        tracemalloc.stop()
    assert writes == 50
    assert peak < 400_000  # a list of the project's rows alone would be 800,000 bytes


def test_scenery_is_lively_and_reproducible() -> None:
    def run(seed: int) -> dict[int, list[str]]:
        emu = Emulator(USER, TOKEN, seed=seed)
        scenery = Scenery(emu, seed=seed, clock=lambda: FROZEN)
        for _ in range(400):
            scenery.tick()
        return {p: emu.visible(p) for p in scenery.project_ids}

    logs = run(3)
    assert logs == run(3) != run(4)
    lines = [line for project in logs.values() for line in project]
    assert any("Order filled: " in line for line in lines)
    assert any(line.startswith("Launching analysis for L-") for line in lines)
    assert any(line.startswith("2023-11-14 ") for line in lines)  # FROZEN in New York
    assert sum(line.count("Algorithm started") for line in lines) > 3  # redeploys happened


def test_scenery_thread_writes_until_stopped(emu: Emulator) -> None:
    scenery = Scenery(emu, pace=(0.01, 0.02)).start()
    try:
        deadline = time.monotonic() + 5
        while sum(emu.length(p) for p in scenery.project_ids) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        scenery.stop()
    assert {"mean-reversion", "momentum-crypto", "pairs-fx"} == {
        name for _, name in emu.model.projects()
    }


def test_serve_prints_credentials_and_stops_on_request() -> None:
    stop, out = threading.Event(), io.StringIO()
    options: dict[str, Any] = {"user_id": USER, "api_token": TOKEN, "publish_interval": 0.0}
    thread = threading.Thread(
        target=serve,
        args=("127.0.0.1", 0),
        kwargs={**options, "max_lines": 1000, "lively": True, "stop": stop, "out": out},
    )
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while "\n" not in out.getvalue():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        found = re.search(r"QC_BASE_URL=(\S+) QC_USER_ID=(\d+) QC_API_TOKEN=(\S+)", out.getvalue())
        assert found and (str(USER), TOKEN) == found.group(2, 3)
        answer = requests.post(
            found.group(1) + "/projects/read", json={}, headers=signed(), timeout=5
        )
        assert len(answer.json()["projects"]) == 3
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_lagging_answer_is_the_log_as_it_was_rows_earlier(client: Client, emu: Emulator) -> None:
    """``lag``: the project's next answers come from a replica that has not seen the newest
    rows: ``length`` that much lower, the rows past it missing, the rest in place; then fresh
    answers again. Another project's answers are not affected."""
    _, second, other = _three_deployments(emu)  # project 1: a0..a4, b0..b2
    emu.lag(1, lines=2, answers=2)
    emu.lag(2, lines=1)
    stale = client.logs(1, second, 3, 10)
    assert (stale["logs"], stale["length"], stale["deploymentOffset"]) == (["a3", "a4", "b0"], 6, 5)
    deep = client.logs(1, second, 0, 10)  # the second stale answer
    assert (deep["logs"], deep["length"]) == (emu.visible(1)[:6], 6)
    fresh = client.logs(1, second, 3, 10)
    assert (fresh["logs"], fresh["length"]) == (["a3", "a4", "b0", "b1", "b2"], 8)
    assert client.logs(2, other, 0, 10)["length"] == 3  # project 2's own stale answer
    assert client.logs(2, other, 0, 10)["length"] == 4
    assert emu.lags.pending == 0


def test_a_lag_past_a_deployments_start_clamps_its_offset(client: Client, emu: Emulator) -> None:
    _, second, _ = _three_deployments(emu)
    emu.lag(1, lines=5)
    answer = client.logs(1, second, 0, 10)
    assert (answer["logs"], answer["length"], answer["deploymentOffset"]) == (
        ["a0", "a1", "a2"],
        3,
        3,
    )


def test_random_lags_are_reproducible_with_a_seed(make: Callable[..., Emulator]) -> None:
    def lengths(seed: int) -> list[int]:
        emu = make()
        emu.add_project(1, "p")
        deploy = emu.deploy(1)
        emu.write(1, [str(i) for i in range(100)])
        emu.lags.random(0.5, lines=10, seed=seed)
        client = Client(emu)
        return [client.logs(1, deploy, 0, 5)["length"] for _ in range(40)]

    drawn = lengths(3)
    assert drawn == lengths(3)
    assert 0 < sum(length < 100 for length in drawn) < 40
    assert all(90 <= length <= 100 for length in drawn)


def test_cleared_lags_answer_fresh_again(client: Client, emu: Emulator) -> None:
    _, second, _ = _three_deployments(emu)
    emu.lag(1, lines=3, answers=5)
    emu.lags.random(1.0, lines=3)
    emu.lags.clear()
    assert (client.logs(1, second, 0, 10)["length"], emu.lags.pending) == (8, 0)

"""Fault injection in the emulator, each fault observed the way a client sees it."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from tailer.emulator import Emulator, Fault
from tailer.emulator.faults import Faults

USER, TOKEN = 1234, "secret-token"


def signed() -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hashlib.sha256(f"{TOKEN}:{stamp}".encode()).hexdigest()
    basic = base64.b64encode(f"{USER}:{digest}".encode()).decode()
    return {"Timestamp": stamp, "Authorization": f"Basic {basic}"}


@pytest.fixture
def make() -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def factory(**options: Any) -> Emulator:
        emu = Emulator(USER, TOKEN, **options).start()
        emu.add_project(1, "p")
        emu.deploy(1)
        emu.write(1, [f"line {i}" for i in range(20)])
        started.append(emu)
        return emu

    yield factory
    for emu in started:
        emu.stop()


@pytest.fixture
def emu(make: Callable[..., Emulator]) -> Emulator:
    return make()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def read(
    emu: Emulator, session: requests.Session | None = None, timeout: float = 10
) -> requests.Response:
    """Lines 0 to 5 of project 1, over ``session``'s kept-alive connection or a fresh one."""
    body = {"format": "json", "projectId": 1, "algorithmId": emu.deploy_ids(1)[-1]}
    body |= {"startLine": 0, "endLine": 5}
    url = emu.base_url + "/live/logs/read"
    post = requests.post if session is None else session.post
    return post(url, json=body, headers=signed(), timeout=timeout)


def authenticate(emu: Emulator, session: requests.Session | None = None) -> requests.Response:
    post = requests.post if session is None else session.post
    return post(emu.base_url + "/authenticate", json={}, headers=signed(), timeout=10)


@pytest.mark.parametrize(
    ("fault", "status", "content_type", "body"),
    [
        (Fault("500"), 500, "application/json", b'{"success":false,"errors":["Internal Server'),
        (Fault("empty500"), 500, None, b""),
        (Fault("502"), 502, "application/json", b'{"success":false,"errors":["Bad Gateway"]}'),
        (Fault("503"), 503, "application/json", b'{"success":false,"errors":["Service Unava'),
        (Fault("html"), 502, "text/html; charset=utf-8", b"<html>"),
        (Fault("auth"), 401, "application/json", b'{"success":false,"errors":["Unauthorized"]}'),
    ],
)
def test_answering_faults_then_normal_service(
    emu: Emulator,
    session: requests.Session,
    fault: Fault,
    status: int,
    content_type: str | None,
    body: bytes,
) -> None:
    emu.faults.script([fault])
    answer = read(emu, session)
    assert (answer.status_code, answer.headers.get("Content-Type")) == (status, content_type)
    assert answer.content.startswith(body)
    assert read(emu, session).json()["logs"] == ["line 0", "line 1", "line 2", "line 3", "line 4"]
    assert (emu.stats.faults_injected, emu.stats.requests) == (1, 2)


@pytest.mark.parametrize(("retry_after", "header"), [(None, "1"), (2, "2"), (0.5, "0.5")])
def test_429_carries_retry_after(
    emu: Emulator, session: requests.Session, retry_after: float | None, header: str
) -> None:
    emu.faults.script([Fault("429", retry_after=retry_after)])
    answer = read(emu, session)
    assert (answer.status_code, answer.headers["Retry-After"]) == (429, header)


def test_auth_fault_takes_the_configured_shape(
    make: Callable[..., Emulator], session: requests.Session
) -> None:
    emu = make(auth_failure="hash")
    emu.faults.script([Fault("auth")])
    answer = read(emu, session)
    assert (answer.status_code, answer.json()["errors"]) == (200, ["Hash doesn't match."])


def test_truncated_answer_is_half_a_json_body(emu: Emulator, session: requests.Session) -> None:
    emu.faults.script([Fault("truncated")])
    answer = read(emu, session)
    assert answer.status_code == 200
    assert int(answer.headers["Content-Length"]) == len(answer.content) > 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.content)
    assert read(emu, session).json()["success"] is True  # same kept-alive connection


def test_reset_is_a_connection_error_and_service_resumes(
    emu: Emulator, session: requests.Session
) -> None:
    emu.faults.script([Fault("reset")])
    with pytest.raises(requests.exceptions.ConnectionError):
        read(emu, session)
    assert read(emu, session).json()["success"] is True


def test_slow_answers_late_but_right(emu: Emulator, session: requests.Session) -> None:
    emu.faults.script([Fault("slow", delay=0.3)])
    began = time.monotonic()
    answer = read(emu, session)
    assert time.monotonic() - began >= 0.25
    assert answer.json()["logs"][0] == "line 0"


def test_slow_beyond_the_client_timeout_is_a_timeout(
    emu: Emulator, session: requests.Session
) -> None:
    emu.faults.script([Fault("slow", delay=1.0)])
    with pytest.raises(requests.exceptions.ReadTimeout):
        read(emu, session, timeout=0.2)


def test_script_is_consumed_in_order_and_only_on_its_path(
    emu: Emulator, session: requests.Session
) -> None:
    emu.faults.script([Fault("503"), Fault("500")], path="/live/logs/read")
    assert authenticate(emu, session).status_code == 200
    assert [read(emu, session).status_code for _ in range(3)] == [503, 500, 200]
    assert emu.faults.pending == 0


def test_faulted_requests_do_not_count_as_served_windows(
    emu: Emulator, session: requests.Session
) -> None:
    emu.faults.script([Fault("500")])
    body = {"projectId": 1, "algorithmId": emu.deploy_ids(1)[-1], "startLine": 0, "endLine": 900}
    url = emu.base_url + "/live/logs/read"
    assert session.post(url, json=body, headers=signed(), timeout=5).status_code == 500
    assert (emu.stats.oversized_windows, emu.length(1)) == (0, 20)


def test_random_faults_are_reproducible_with_a_seed(
    make: Callable[..., Emulator], session: requests.Session
) -> None:
    def statuses(seed: int) -> list[int]:
        emu = make()
        emu.faults.random(rate=0.5, kinds=("500", "503", "429", "empty500"), seed=seed)
        return [authenticate(emu, session).status_code for _ in range(40)]

    first = statuses(7)
    assert first == statuses(7) != statuses(8)
    assert 200 in first and {500, 503, 429} & set(first)


def test_clear_restores_faultless_service(emu: Emulator, session: requests.Session) -> None:
    emu.faults.random(rate=1.0, kinds=("503",))
    emu.faults.script([Fault("500")])
    emu.faults.clear()
    assert authenticate(emu, session).status_code == 200
    assert emu.stats.faults_injected == 0


def test_unknown_fault_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("teapot")
    with pytest.raises(ValueError, match="unknown fault kind"):
        Faults().random(rate=0.1, kinds=("teapot",))


def test_stall_holds_answers_until_released(emu: Emulator, session: requests.Session) -> None:
    emu.stall(True)
    with pytest.raises(requests.exceptions.ReadTimeout):
        read(emu, session, timeout=0.2)
    answers: list[int] = []
    waiting = threading.Thread(target=lambda: answers.append(read(emu).status_code))
    waiting.start()
    time.sleep(0.1)
    assert answers == []
    emu.stall(False)
    waiting.join(timeout=5)
    assert answers == [200]
    assert read(emu, session).status_code == 200


def test_stop_releases_stalled_requests() -> None:
    emu = Emulator(USER, TOKEN).start()
    emu.stall(True)
    failures: list[type[BaseException]] = []

    def client() -> None:
        try:
            authenticate(emu)
        except requests.exceptions.RequestException as error:
            failures.append(type(error))

    waiting = threading.Thread(target=client)
    waiting.start()
    time.sleep(0.1)
    began = time.monotonic()
    emu.stop()
    waiting.join(timeout=5)
    assert time.monotonic() - began < 5 and not waiting.is_alive()
    assert failures and issubclass(failures[0], requests.exceptions.ConnectionError)

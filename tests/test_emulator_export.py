"""The emulator's /live/export/logs, spoken to over real HTTP on loopback."""

from __future__ import annotations

import http.client
import signal
import time
from urllib.parse import urlsplit

import pytest
import requests

from tailer.emulator import Emulator, Fault

from .conftest import Background, qc_tail
from .test_commands_e2e import exported, plain_env
from .test_emulator import TOKEN, USER, Client, signed

PROJECT = 31


@pytest.fixture
def exporting() -> Emulator:
    with Emulator(user_id=USER, api_token=TOKEN, max_lines=50).start() as emu:
        emu.add_project(PROJECT, "exported")
        yield emu


def export(client: Client, project: int = PROJECT, deploy: str = "L-any") -> requests.Response:
    return client.post("/live/export/logs", {"projectId": project, "deployId": deploy})


def test_the_export_is_every_retained_row_of_the_project_oldest_first_as_a_file(exporting):
    first = exporting.deploy(PROJECT)
    exporting.write(PROJECT, [f"a{i}" for i in range(30)])
    second = exporting.deploy(PROJECT)
    exporting.write(PROJECT, [f"b{i}" for i in range(30)])  # 60 rows: the 10 oldest trimmed
    answer = export(Client(exporting), deploy=first)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert f"algorithm-log_{first}.txt" in answer.headers["Content-Disposition"]
    rows = answer.content.decode().split("\n")
    assert rows[-1] == ""  # one row per line, each ended
    assert rows[:-1] == exporting.visible(PROJECT)
    assert rows[0] == "a10" and rows[-2] == "b29"
    assert export(Client(exporting), deploy=second).content == answer.content  # not filtered


def test_over_the_quota_the_answer_is_429_with_retry_after(exporting):
    exporting.deploy(PROJECT)
    exporting.export.quota = 2
    client = Client(exporting)
    assert [export(client).status_code for _ in range(2)] == [200, 200]
    refused = export(client)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 1800
    assert refused.json()["success"] is False
    assert exporting.export.served == 2 and exporting.export.refused == 1


def test_over_the_quota_the_answer_can_be_200_success_false(exporting):
    exporting.deploy(PROJECT)
    exporting.export.quota, exporting.export.over_quota = 0, "refusal"
    refused = export(Client(exporting))
    assert refused.status_code == 200
    assert refused.json()["success"] is False
    assert "limit" in refused.json()["errors"][0].lower()


def test_the_quota_is_a_sliding_window_over_the_period():
    now = [1000.0]
    with Emulator(user_id=USER, api_token=TOKEN, clock=lambda: now[0]).start() as emu:
        emu.add_project(PROJECT, "p")
        emu.deploy(PROJECT)
        emu.export.quota = 1
        client = Client(emu, when=lambda: now[0])
        assert export(client).status_code == 200
        now[0] += 1799
        assert export(client).status_code == 429
        now[0] += 1
        assert export(client).status_code == 200


def test_switched_off_the_endpoint_is_unknown(exporting):
    exporting.deploy(PROJECT)
    exporting.export.enabled = False
    answer = export(Client(exporting))
    assert answer.status_code == 404
    assert answer.json()["success"] is False


def test_an_unsigned_export_is_refused_like_every_call(exporting):
    exporting.deploy(PROJECT)
    answer = requests.post(
        exporting.base_url + "/live/export/logs", json={"projectId": PROJECT}, timeout=10
    )
    assert answer.status_code == 401
    assert exporting.export.served == 0


def test_a_request_without_a_deploy_id_or_project_is_refused(exporting):
    exporting.deploy(PROJECT)
    client = Client(exporting)
    missing = client.post("/live/export/logs", {"projectId": PROJECT}).json()
    assert missing["success"] is False and "deployId" in missing["errors"][0]
    unknown = export(client, project=999).json()
    assert unknown["success"] is False


def test_faults_and_latency_apply_to_the_export_like_every_endpoint():
    with Emulator(user_id=USER, api_token=TOKEN, latency=0.2).start() as emu:
        emu.add_project(PROJECT, "p")
        emu.deploy(PROJECT)
        emu.faults.script([Fault("503")], path="/live/export/logs")
        client = Client(emu)
        began = time.monotonic()
        assert export(client).status_code == 503
        assert time.monotonic() - began >= 0.2  # a lower bound: slept before answering
        assert export(client).status_code == 200


def test_a_truncated_export_declares_its_whole_length_and_closes_early(exporting):
    exporting.deploy(PROJECT)
    exporting.write(PROJECT, [f"row {i}" for i in range(40)])
    exporting.export.spoil(["truncated"])
    url = urlsplit(exporting.base_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    body = b'{"projectId": %d, "deployId": "L-x"}' % PROJECT
    connection.request("POST", url.path + "/live/export/logs", body, signed())
    answer = connection.getresponse()
    declared = int(answer.getheader("Content-Length"))
    with pytest.raises(http.client.IncompleteRead):
        answer.read()
    whole = "".join(f"row {i}\n" for i in range(40)).encode()
    assert declared == len(whole)
    assert export(Client(exporting)).content == whole  # the next one is whole


@pytest.mark.parametrize(
    ("spoil", "check"),
    [
        ("garbled", lambda body, whole: b"\xff\xfe" in body and len(body) == len(whole) + 2),
        ("skewed", lambda body, whole: body.count(b"\n") == whole.count(b"\n") - 1),
        ("altered", lambda body, whole: b"row 20 (altered)\n" in body),
    ],
)
def test_a_spoiled_export_is_spoiled_once(exporting, spoil, check):
    exporting.deploy(PROJECT)
    exporting.write(PROJECT, [f"row {i}" for i in range(40)])
    exporting.export.spoil([spoil])
    whole = "".join(f"row {i}\n" for i in range(40)).encode()
    assert check(export(Client(exporting)).content, whole)
    assert export(Client(exporting)).content == whole


@pytest.mark.parametrize(
    ("options", "statuses"),
    [
        (["--export-quota", "1"], [200, 429]),
        (["--export", "refusal", "--export-quota", "1"], [200, 200]),
        (["--export", "off"], [404, 404]),
    ],
)
def test_the_emulator_commands_export_options_take_effect(options, statuses):
    emulator = Background(qc_tail("emulator", "--quiet", "--preload", "10", *options), plain_env())
    try:
        env, projects = exported(emulator.wait_for(1, timeout=60)[0])
        sign = signed(user=int(env["QC_USER_ID"]), token=env["QC_API_TOKEN"])
        body = {"projectId": projects[0], "deployId": "L-any"}
        url = env["QC_BASE_URL"] + "/live/export/logs"
        answers = [requests.post(url, json=body, headers=sign, timeout=30) for _ in range(2)]
    finally:
        assert emulator.stop(signal.SIGTERM)[0] == 0
    assert [answer.status_code for answer in answers] == statuses
    if statuses[0] == 200:
        assert answers[0].content.count(b"\n") == 10
        assert answers[1].headers["Content-Type"] == "application/json"

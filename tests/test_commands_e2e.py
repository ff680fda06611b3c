"""`qc-tail list`, `check`, `demo`, `emulator` and `run`'s usage, end to end: the real CLI as a
subprocess, the emulator over loopback."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.emulator import Emulator
from tailer.errors import ApiError

from .conftest import PROJECT, USER_ID, Background, clock_env, qc_tail, run, secrets_in
from .loki_recorder import LokiRecorder

OTHER = 888  # a second project, its deployment stopped
IDLE = 999  # a project that was never deployed

HANGUP_STOPS = [(signal.SIGINT, 130), (signal.SIGHUP, 129), (signal.SIGTERM, 0)]


@pytest.fixture
def account(emu: Emulator) -> Emulator:
    """Project 777 running, project 888 stopped, project 999 never deployed."""
    emu.deploy(PROJECT)
    emu.add_project(OTHER, "momentum")
    emu.deploy(OTHER)
    emu.stop_deployment(OTHER)
    emu.add_project(IDLE, "idle")
    return emu


def plain_env(**extra: str) -> dict[str, str]:
    """An environment with no credentials and no API address."""
    path = os.environ.get("PATH", "/usr/bin:/bin")
    return {**clock_env(), "PATH": path, "PYTHONUNBUFFERED": "1", **extra}


# -- list ----------------------------------------------------------------------------------


def test_list_prints_a_table_of_live_deployments(account):
    result = run(account, "list")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["PROJECT", "NAME", "DEPLOY", "STATUS", "LAUNCHED"]
    assert sorted(row[:4] for row in rows[1:]) == [
        [str(PROJECT), "mean-reversion", account.deploy_ids(PROJECT)[-1], "Running"],
        [str(OTHER), "momentum", account.deploy_ids(OTHER)[-1], "Stopped"],
    ]
    assert all(len(row) == 5 for row in rows)  # launched is shown


def test_list_json_gives_one_object_per_deployment_and_filters_by_status(account):
    result = run(account, "list", "--format", "json", "--status", "Stopped")
    assert result.returncode == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["project_id"], o["name"], o["deploy_id"], o["status"]) for o in objects] == [
        (OTHER, "momentum", account.deploy_ids(OTHER)[-1], "Stopped")
    ]
    assert objects[0]["launched"] is not None and objects[0]["stopped"] is not None


# -- check ---------------------------------------------------------------------------------


def test_check_validates_credentials_and_shows_what_would_be_followed(account, tmp_path):
    config = tmp_path / "qc-tail.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path}"\n\n'
        "[discovery]\nenabled = true\n\n"
        f'[[follow]]\nproject_id = {PROJECT}\nname = "mr"\n\n'
        f"[[follow]]\nproject_id = {IDLE}\n"
    )
    result = run(account, "check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    deploy_id = account.deploy_ids(PROJECT)[-1]
    assert result.stdout.splitlines() == [
        f"config: {config}: ok",
        f"state.dir: {tmp_path}: writable",
        f"credentials: ok (user {USER_ID}, clock skew 0 s)",
        f"follow: project {PROJECT} [mr]: {deploy_id} (current, across redeploys), status Running",
        f"follow: project {IDLE}: no live deployment yet (will wait)",
        "discovery: 1 running deployment(s) would be followed",
        f"  project {PROJECT} [mean-reversion]: {deploy_id}",
    ]


def outputs_config(tmp_path: Path, state: Path, directory: Path, loki_url: str) -> Path:
    config = tmp_path / "qc-tail.toml"
    config.write_text(
        f'[state]\ndir = "{state}"\n[discovery]\nenabled = false\n'
        f'[output]\ndirectory = "{directory}"\n[output.loki]\nurl = "{loki_url}"\n'
    )
    return config


def test_check_says_the_outputs_can_be_used(account, tmp_path):
    with LokiRecorder() as loki:
        config = outputs_config(tmp_path, tmp_path, tmp_path / "new" / "out", loki.url)
        result = run(account, "check", "--config", str(config))
        ready = f"{loki.base_url}/ready"
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:4] == [
        f"state.dir: {tmp_path}: writable",
        f"output.directory: {tmp_path / 'new' / 'out'}: missing; can be made (under {tmp_path})",
        f"loki: {ready}: answers (HTTP 404: 404 page not found)",  # the recorder has no /ready
    ]
    assert not (tmp_path / "new").exists()  # check makes nothing


def test_check_says_which_directory_cannot_be_made_and_exits_73(account, tmp_path):
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "out"
    with LokiRecorder() as loki:
        config = outputs_config(tmp_path, tmp_path, bad, loki.url)
        result = run(account, "check", "--config", str(config))
    assert result.returncode == 73, result.stderr
    assert "Traceback" not in result.stderr
    assert (
        f"output.directory: {bad}: cannot create or write there: a part of the path is a "
        "file, not a directory"
    ) in result.stdout
    assert "credentials: ok" in result.stdout  # the rest is checked all the same


def test_check_says_loki_does_not_answer_and_exits_69(account, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://user:pw-secret@127.0.0.1:{port}/loki/api/v1/push"
    config = outputs_config(tmp_path, tmp_path, tmp_path / "out", url)
    result = run(account, "check", "--config", str(config))
    assert result.returncode == 69, result.stderr
    assert f"loki: http://***@127.0.0.1:{port}/ready: no answer (ConnectionError)" in (
        result.stdout
    )
    assert "pw-secret" not in result.stdout + result.stderr


def test_check_with_a_wrong_token_exits_77_and_says_so(account):
    wrong = "wrong-canary-token-41c7"
    result = run(account, "check", QC_API_TOKEN=wrong)
    assert result.returncode == 77
    assert result.stdout.splitlines() == ["config: (none: defaults and environment): ok"]
    assert "refused the credentials" in result.stderr
    assert "token is wrong" in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


# -- run: usage ----------------------------------------------------------------------------


def test_run_detach_without_pidfile_is_a_usage_error(emu):
    result = run(emu, "run", "--detach")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: qc-tail run ")
    assert "qc-tail run: error: --detach needs --pidfile PATH" in result.stderr
    assert result.stdout == ""


# -- demo ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), HANGUP_STOPS)
def test_demo_follows_its_algorithms_until_a_signal(signum, code):
    demo = Background(qc_tail("demo"), plain_env())
    lines = demo.wait_for(4, timeout=60)[:4]
    status, stderr = demo.stop(signum)
    assert all(re.match(r"\[[a-z-]+\] \S", line) for line in lines), lines
    assert status == code, stderr
    assert "Traceback" not in stderr


# -- emulator ------------------------------------------------------------------------------


def exported(line: str) -> tuple[dict[str, str], list[int]]:
    """The variables of the emulator's ``export ...  # projects: ...`` line, and the projects."""
    command, _, comment = line.partition("#")
    words = shlex.split(command)
    assert words[0] == "export"
    env = dict(word.split("=", 1) for word in words[1:])
    return env, [int(p) for p in comment.removeprefix(" projects:").split() if p.isdigit()]


@pytest.mark.parametrize(("signum", "code"), HANGUP_STOPS)
def test_the_emulator_prints_an_export_line_that_points_qc_tail_at_it(signum, code):
    emulator = Background(qc_tail("emulator", "--port", "0"), plain_env())
    try:
        env, projects = exported(emulator.wait_for(1, timeout=60)[0])
        assert sorted(env) == ["QC_API_TOKEN", "QC_BASE_URL", "QC_USER_ID"]
        assert env["QC_BASE_URL"].startswith("http://127.0.0.1:")
        listed = subprocess.run(
            qc_tail("list", "--format", "json"),
            env=plain_env(**env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=Path(__file__).parent,
        )
        assert listed.returncode == 0, listed.stderr
        assert env["QC_API_TOKEN"] not in listed.stdout + listed.stderr
        assert sorted(json.loads(line)["project_id"] for line in listed.stdout.splitlines()) == (
            sorted(projects)
        )
    finally:
        status, stderr = emulator.stop(signum)
    assert status == code, stderr
    assert "Traceback" not in stderr
    assert secrets_in(stderr) == []


def test_the_emulators_fault_auth_and_skew_options_take_effect():
    """`--fault-rate 1 --fault 503`: every request answered 503; `--auth-failure empty500`:
    a wrong token gets a bare 500, which `check` reports as refused credentials (77);
    `--skew`: `check` measures the server clock's offset."""
    faulty = Background(
        qc_tail("emulator", "--quiet", "--fault-rate", "1", "--fault", "503"), plain_env()
    )
    try:
        env, _ = exported(faulty.wait_for(1, timeout=60)[0])
        request = urllib.request.Request(env["QC_BASE_URL"] + "/authenticate", b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        answer.value.close()  # the error holds the response and its socket
        assert answer.value.code == 503
    finally:
        assert faulty.stop(signal.SIGTERM)[0] == 0

    shaped = Background(
        qc_tail("emulator", "--quiet", "--auth-failure", "empty500", "--skew", "-3600"),
        plain_env(),
    )
    try:
        env, _ = exported(shaped.wait_for(1, timeout=60)[0])
        checked = subprocess.run(
            qc_tail("check"), env=plain_env(**env), capture_output=True, text=True, timeout=60
        )
        refused = subprocess.run(
            qc_tail("check"),
            env=plain_env(**{**env, "QC_API_TOKEN": "not-the-token"}),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        assert shaped.stop(signal.SIGTERM)[0] == 0
    assert checked.returncode == 0, checked.stderr
    skew = re.search(r"clock skew (-?\d+) s", checked.stdout)
    assert skew is not None and abs(int(skew.group(1)) + 3600) <= 1  # Date: whole seconds
    assert refused.returncode == 77, refused.stderr
    assert "HTTP 500 with an empty body" in refused.stderr


def test_the_emulators_list_option_takes_effect():
    """`--list-ignores-project`: /live/list answers every project's deployments whatever
    projectId asks. (`--stale-read-rate` is accepted beside it; Emulator's tests show what it
    does, which needs a redeploy that this command line cannot make.)"""
    command = qc_tail(
        "emulator", "--quiet", "--projects", "2", "--list-ignores-project", "--stale-read-rate", "1"
    )
    emulator = Background(command, plain_env())
    try:
        env, _ = exported(emulator.wait_for(1, timeout=60)[0])
        api = QcApi(env["QC_BASE_URL"], QcAuth(int(env["QC_USER_ID"]), env["QC_API_TOKEN"]))
        listed = api.call("/live/list", {"projectId": 1})["live"]
        assert sorted(d["projectId"] for d in listed) == [1, 2]
    finally:
        assert emulator.stop(signal.SIGTERM)[0] == 0


def test_the_emulators_lag_options_make_stale_log_answers():
    """`--lag-rate 1 --lag-lines 5`: every log read answers as the log was 1 to 5 rows
    earlier (a lagging replica); other endpoints are as ever."""
    lagging = Background(
        qc_tail("emulator", "--quiet", "--preload", "100", "--lag-rate", "1", "--lag-lines", "5"),
        plain_env(),
    )
    try:
        env, projects = exported(lagging.wait_for(1, timeout=60)[0])
        api = QcApi(env["QC_BASE_URL"], QcAuth(int(env["QC_USER_ID"]), env["QC_API_TOKEN"]))
        deploy_id = api.read_live(projects[0]).deploy_id
        lengths = {api.read_logs(projects[0], deploy_id, 0, 200).length for _ in range(20)}
        api.close()
    finally:
        assert lagging.stop(signal.SIGTERM)[0] == 0
    assert lengths <= {95, 96, 97, 98, 99} and len(lengths) > 1


def test_the_emulators_switches_for_what_the_docs_leave_open_take_effect():
    """`--past-end error`, `--strict-window`, `--bare-answers`, `--absolute-numbers` (with
    `--max-lines 60`, retention keeps the last 60 of 100 rows, numbered as they were)."""
    command = qc_tail(
        "emulator", "--quiet", "--preload", "100", "--max-lines", "60", "--past-end", "error",
        "--strict-window", "--bare-answers", "--absolute-numbers",
    )  # fmt: skip
    emulator = Background(command, plain_env())
    try:
        env, projects = exported(emulator.wait_for(1, timeout=60)[0])
        api = QcApi(env["QC_BASE_URL"], QcAuth(int(env["QC_USER_ID"]), env["QC_API_TOKEN"]))
        deploy_id = api.read_live(projects[0]).deploy_id

        def logs(start: int, end: int) -> dict:
            body = {"projectId": projects[0], "algorithmId": deploy_id}
            try:
                return api.call("/live/logs/read", {**body, "startLine": start, "endLine": end})
            except ApiError as refused:
                return {"refused": str(refused)}

        kept = logs(30, 50)
        past = logs(100, 101)
        window = logs(50, 300)
        api.close()
    finally:
        assert emulator.stop(signal.SIGTERM)[0] == 0
    assert (len(kept["logs"]), kept["length"]) == (10, 100)  # rows 30..39 gone, numbers kept
    assert "errors" not in kept and set(kept) > {"success", "logs", "length", "deploymentOffset"}
    assert "out of range" in past["refused"]
    assert "smaller than 250" in window["refused"]


def test_the_emulator_refuses_an_unknown_fault_kind_as_a_usage_error():
    result = subprocess.run(
        qc_tail("emulator", "--fault", "bogus"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "unknown kind 'bogus'" in result.stderr and "empty500" in result.stderr


def test_the_emulator_on_a_port_in_use_exits_69_saying_so():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            qc_tail("emulator", "--port", str(port)),
            capture_output=True,
            text=True,
            timeout=60,
            env=plain_env(),
        )
    assert result.returncode == 69, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr


def test_the_emulator_refuses_a_port_out_of_range_as_a_usage_error():
    result = subprocess.run(
        qc_tail("emulator", "--port", "70000"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "from 0 to 65535" in result.stderr

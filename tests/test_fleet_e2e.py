"""Operating a fleet end to end: /metrics and /healthz of a real `qc-tail run`, its lifecycle
events, and shards of one account split over several instances."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tailer.emulator import Emulator
from tailer.emulator.faults import Fault

from .conftest import PROJECT, TOKEN, USER_ID, Background, cli_env, qc_tail, run, stamp


def config(tmp_path: Path, emu: Emulator, *extra: str, name: str = "qc-tail") -> Path:
    """A daemon config: the emulator, files under ``tmp_path/name``, metrics on a free port."""
    home = tmp_path / name
    lines = [
        "[api]",
        f'base_url = "{emu.base_url}"',
        f"user_id = {USER_ID}",
        "timeout = 10",
        "[poll]",
        "interval = 0.05",
        "max_interval = 0.2",
        "drain = 1",
        "[state]",
        f'dir = "{home / "state"}"',
        "[output]",
        f'directory = "{home / "out"}"',
        *extra,
    ]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def port_of(daemon: Background, timeout: float = 30) -> int:
    """The metrics port the daemon says it listens on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in events(daemon.stderr()):
            if event["event"] == "metrics_listening":
                return int(event["port"])
        time.sleep(0.05)
    raise AssertionError(f"no metrics_listening event:\n{daemon.stderr()}")


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed by prometheus_client: (name, labels) -> value."""
    status, text = get(port, "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def written(tmp_path: Path, name: str = "qc-tail") -> dict[int, list[str]]:
    """Each project's lines in the instance's output files."""
    found: dict[int, list[str]] = {}
    for path in sorted((tmp_path / name / "out").glob("*/*.log")):
        found.setdefault(int(path.parent.name), []).extend(path.read_text().splitlines())
    return found


def test_metrics_count_what_was_delivered_through_faults_and_a_gap(tmp_path, emu):
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(n) for n in range(100)])
    emu.publish()
    follow = ["[discovery]", "enabled = false", "[[follow]]", f"project_id = {PROJECT}"]
    path = config(tmp_path, emu, *follow, "[metrics]", 'listen = "127.0.0.1:0"')
    assert run(emu, "--config", str(path), "run", "--once").returncode == 0
    emu.write(PROJECT, [stamp(n) for n in range(100, 1000)])
    emu.publish()
    emu.trim(PROJECT, 600)  # lines 100..599 go before this run can read them: a gap
    emu.faults.script(
        [Fault("503"), Fault("429", retry_after=0.1), Fault("reset")], path="/live/logs/read"
    )
    started = time.time()
    daemon = Background(qc_tail("--config", str(path), "run"), cli_env(emu))
    try:
        port = port_of(daemon)
        wait_until(lambda: len(written(tmp_path).get(PROJECT, [])) == 500)
        emu.write(PROJECT, [stamp(n) for n in range(1000, 1200)])
        emu.publish()
        wait_until(lambda: len(written(tmp_path).get(PROJECT, [])) == 700)
        wait_until(lambda: emu.faults.pending == 0)
        metrics = scrape(port)
        daemon.process.send_signal(signal.SIGHUP)
        wait_until(lambda: '"reopened"' in daemon.stderr())
    finally:
        code, stderr = daemon.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert written(tmp_path)[PROJECT] == [stamp(n) for n in range(100)] + [
        stamp(n) for n in range(600, 1200)
    ]
    delivered_now = 400 + 200  # by this run: after the gap, then the new lines
    assert metrics[("qc_tail_lines_total", (("output", "files"),))] == delivered_now
    gaps = [e for e in events(stderr) if e["event"] == "gap"]
    assert len(gaps) == 1
    assert metrics[("qc_tail_gaps_total", ())] == 1
    lost = gaps[0]["lost"]  # "unknown" where the API does not let it be counted
    assert metrics[("qc_tail_gap_lines_total", ())] == (lost if isinstance(lost, int) else 0)
    reads = {
        outcome: metrics.get(
            ("qc_tail_api_requests_total", (("endpoint", "/live/logs/read"), ("outcome", outcome))),
            0,
        )
        for outcome in ("ok", "retried", "throttled", "failed", "auth")
    }
    assert (reads["retried"], reads["throttled"], reads["failed"], reads["auth"]) == (2, 1, 0, 0)
    assert emu.stats.faults_injected == 3
    assert reads["ok"] > 0
    assert metrics[("qc_tail_deployments", ())] == 1
    labels = (("name", "mean-reversion"), ("project_id", str(PROJECT)))
    assert started <= metrics[("qc_tail_last_line_timestamp_seconds", labels)] <= time.time()
    assert metrics[("qc_tail_output_lag_lines", (("output", "files"),))] == 0
    assert metrics[("qc_tail_export_calls_total", ())] == 0

    said = events(stderr)
    names = [e["event"] for e in said]
    first = said[names.index("started")]
    assert first["outputs"] == ["files"] and first["follows"] == [PROJECT] and first["version"]
    begun = [e for e in said if e["event"] == "deployment_started"]
    assert [(e["project"], e["deploy"]) for e in begun] == [(PROJECT, deploy_id)]
    assert "reopened" in names
    stopping = said[names.index("stopping")]
    assert stopping["lines"] == {"files": delivered_now}
    assert names.index("started") < names.index("deployment_started") < names.index("stopping")


def test_healthz_says_503_while_the_loop_is_stuck_and_200_once_it_moves(tmp_path, emu):
    emu.deploy(PROJECT)
    follow = ["[discovery]", "enabled = false", "[[follow]]", f"project_id = {PROJECT}"]
    metrics = ["[metrics]", 'listen = "127.0.0.1:0"', "stall = 1"]
    path = config(tmp_path, emu, *follow, *metrics)
    daemon = Background(qc_tail("--config", str(path), "run"), cli_env(emu))
    try:
        port = port_of(daemon)
        wait_until(lambda: get(port, "/healthz") == (200, "ok\n"))
        emu.faults.script([Fault("slow", delay=5)], path="/live/logs/read")
        answers: list[tuple[int, str]] = []
        wait_until(lambda: answers.append(get(port, "/healthz")) or answers[-1][0] == 503)
        wait_until(lambda: get(port, "/healthz")[0] == 200)
    finally:
        code, stderr = daemon.stop(signal.SIGTERM)
    assert code == 0, stderr
    _, reason = answers[-1]
    assert re.fullmatch(
        r"the worker of files has shown no progress for \d+ s \(limit 1 s\)\n", reason
    )


def test_three_shards_split_thirty_projects_each_written_by_exactly_one(tmp_path):
    with Emulator(user_id=USER_ID, api_token=TOKEN, seed=5).start() as emu:
        projects = range(1001, 1031)
        for project_id in projects:
            emu.add_project(project_id, f"algo-{project_id}")
            emu.deploy(project_id)
            emu.write(project_id, [f"{project_id} line {n}" for n in range(30)])
        emu.publish()
        owned: dict[str, set[int]] = {}
        for k in (1, 2, 3):
            name = f"shard{k}"
            discovery = ["[discovery]", "enabled = true", 'start = "deployment"']
            path = config(tmp_path, emu, *discovery, f'shard = "{k}/3"', name=name)
            checked = run(emu, "--config", str(path), "check")
            assert checked.returncode == 0, checked.stderr
            assert f"discovery: shard {k}/3 owns " in checked.stdout
            owned[name] = {int(p) for p in re.findall(r"^  project (\d+) ", checked.stdout, re.M)}
            result = run(emu, "--config", str(path), "run", "--once")
            assert result.returncode == 0, result.stderr
    outputs = {name: written(tmp_path, name) for name in owned}
    for project_id in projects:
        writers = [name for name, found in outputs.items() if project_id in found]
        assert len(writers) == 1, (project_id, writers)
        lines = outputs[writers[0]][project_id]
        assert lines == [f"{project_id} line {n}" for n in range(30)]
        assert project_id in owned[writers[0]]
    assert sorted(p for found in owned.values() for p in found) == list(projects)
    assert all(owned.values()), "every shard owns some of the 30 projects"


def test_a_dropped_project_ends_with_its_status_and_its_series_go(tmp_path, emu):
    emu.add_project(888, "momentum")
    kept, stopping = emu.deploy(PROJECT), emu.deploy(888)
    emu.write(PROJECT, ["kept 1"])
    emu.write(888, ["stopping 1"])
    emu.publish()
    discovery = ["[discovery]", "enabled = true", "interval = 0.5"]
    path = config(tmp_path, emu, *discovery, "[metrics]", 'listen = "127.0.0.1:0"')

    def series(samples: dict) -> list[tuple]:
        return sorted(k[1] for k in samples if k[0] == "qc_tail_last_line_timestamp_seconds")

    daemon = Background(qc_tail("--config", str(path), "run"), cli_env(emu))
    try:
        port = port_of(daemon)
        wait_until(lambda: written(tmp_path) == {PROJECT: ["kept 1"], 888: ["stopping 1"]})
        wait_until(lambda: len(series(scrape(port))) == 2)  # counted once every output has them
        before = scrape(port)
        emu.stop_deployment(888, "RuntimeError")
        wait_until(lambda: '"stopped_following"' in daemon.stderr())
        wait_until(lambda: '"deployment_ended"' in daemon.stderr())
        after = scrape(port)
    finally:
        code, stderr = daemon.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert series(before) == [
        (("name", "mean-reversion"), ("project_id", str(PROJECT))),
        (("name", "momentum"), ("project_id", "888")),
    ]
    assert series(after) == [(("name", "mean-reversion"), ("project_id", str(PROJECT)))]
    assert (before[("qc_tail_deployments", ())], after[("qc_tail_deployments", ())]) == (2, 1)
    said = events(stderr)
    begun = sorted((e["project"], e["deploy"]) for e in said if e["event"] == "deployment_started")
    assert begun == [(PROJECT, kept), (888, stopping)]
    ended = [e for e in said if e["event"] == "deployment_ended"]
    assert [(e["project"], e["deploy"], e["status"]) for e in ended] == [
        (888, stopping, "RuntimeError")
    ]
    assert [e["event"] for e in said][-1] == "stopping"


def test_a_metrics_address_in_use_exits_69_saying_which(tmp_path, emu):
    emu.deploy(PROJECT)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        follow = ["[discovery]", "enabled = false", "[[follow]]", f"project_id = {PROJECT}"]
        path = config(tmp_path, emu, *follow, "[metrics]", f'listen = "127.0.0.1:{port}"')
        result = run(emu, "--config", str(path), "run", "--once")
    assert result.returncode == 69
    assert f"metrics.listen: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr

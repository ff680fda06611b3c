"""`qc-tail tail` end to end: the real CLI as a subprocess, the emulator over loopback."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import threading
import time

import pytest

from tailer.emulator import Emulator, Fault

from .conftest import (
    PROJECT,
    TOKEN,
    USER_ID,
    VARIANTS,
    Background,
    cli_env,
    qc_tail,
    run,
    secrets_in,
    stamp,
)


def lines(n: int, first: int = 0) -> list[str]:
    return [stamp(i) for i in range(first, first + n)]


def deployed(emu: Emulator, n: int) -> str:
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, lines(n))
    emu.publish()
    return deploy_id


def test_last_n_lines(emu):
    deployed(emu, 50)
    result = run(emu, "tail", str(PROJECT), "-n", "7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == lines(7, first=43)


def test_default_is_the_last_ten_lines(emu):
    deployed(emu, 50)
    assert run(emu, "tail", str(PROJECT)).stdout.splitlines() == lines(10, first=40)


@pytest.mark.parametrize(
    ("lines_arg", "first"), [("+7", 6), ("+1", 0), ("+0", 0), ("+50", 49), ("+51", 50), ("+99", 50)]
)
def test_plus_k_starts_with_the_deployments_kth_line(emu, lines_arg, first):
    deployed(emu, 30)
    emu.deploy(PROJECT)  # the current deployment's lines start at project line 30
    emu.write(PROJECT, lines(50, first=100))
    emu.publish()
    result = run(emu, "tail", str(PROJECT), "-n", lines_arg)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == lines(50, first=100)[first:]


def test_plus_one_is_from_start(emu):
    deploy_id = deployed(emu, 600)
    plus_one = run(emu, "tail", str(PROJECT), "-n", "+1")
    assert plus_one.returncode == 0, plus_one.stderr
    from_start = run(emu, "tail", str(PROJECT), "--from-start")
    assert plus_one.stdout.splitlines() == from_start.stdout.splitlines()
    assert plus_one.stdout.splitlines() == emu.published(PROJECT, deploy_id)


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
def test_from_start_reads_every_line_across_many_windows_each_once(emu):
    """1,235 lines: a probe, then six windows of 249 overlapping by the 4 lines each checks
    (249 + 4 x 245 + 6); the answer that reached the end is not asked again."""
    deploy_id = deployed(emu, 1235)
    result = run(emu, "tail", str(PROJECT), "--from-start")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == emu.published(PROJECT, deploy_id)
    assert emu.stats.by_path["/live/logs/read"] == 7


def test_only_the_current_deployment_is_shown(emu):
    deployed(emu, 30)
    current = emu.deploy(PROJECT)
    emu.write(PROJECT, ["new 1", "new 2"])
    emu.publish()
    result = run(emu, "tail", str(PROJECT), "-n", "100")
    assert result.stdout.splitlines() == emu.published(PROJECT, current) == ["new 1", "new 2"]


def test_a_pinned_old_deployment_ends_where_the_next_begins(emu):
    old = deployed(emu, 300)
    emu.deploy(PROJECT)
    emu.write(PROJECT, lines(300, first=1000))
    emu.publish()
    result = run(emu, "tail", str(PROJECT), "--deploy", old, "--from-start")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == lines(300)


def test_json_objects_carry_the_contract_fields(emu):
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, ["Launching analysis with LEAN Engine v2.5", "2026-10-08 14:20:04 started"])
    emu.publish()
    result = run(emu, "tail", str(PROJECT), "--from-start", "--format", "json")
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    common = {"type": "line", "project_id": PROJECT, "deploy_id": deploy_id}
    common["name"] = "mean-reversion"
    assert objects == [
        {
            **common,
            "line": 0,
            "position": 0,
            "time": None,
            "text": "Launching analysis with LEAN Engine v2.5",
        },
        {
            **common,
            "line": 1,
            "position": 1,
            "time": "2026-10-08T14:20:04",
            "text": "2026-10-08 14:20:04 started",
        },
    ]


def test_prefix_names_the_deployment(emu):
    deployed(emu, 2)
    result = run(emu, "tail", str(PROJECT), "--prefix")
    assert result.stdout.splitlines() == [f"[mean-reversion] {line}" for line in lines(2)]


FAULTS = ["500", "empty500", "502", "503", "429", "reset", "truncated", "slow", "auth", "html"]


@pytest.mark.parametrize("kind", FAULTS)
def test_faults_leave_the_output_exact(emu, kind):
    deploy_id = deployed(emu, 600)
    fault = Fault(kind, retry_after=1, delay=0.3)
    emu.faults.script([fault, fault], path="/live/logs/read")
    result = run(emu, "tail", str(PROJECT), "--from-start")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == emu.published(PROJECT, deploy_id)
    assert emu.stats.faults_injected == 2
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("where", "first"), [(["-n", "2"], 48), (["-n", "+49"], 48), (["--from-start"], 0)]
)
def test_lines_published_while_a_read_waits_are_not_printed(emu, where, first):
    """``tail -n 2`` prints exactly 2 lines: the last ones as of the answer its start was
    computed from. The read after it is slow (as a retried one would be) and lines are
    published meanwhile: they came after, and are not printed."""
    deployed(emu, 50)
    slow = [Fault("slow", delay=0.01), Fault("slow", delay=1.0)]  # the probe, then the read
    emu.faults.script(slow, path="/live/logs/read")

    def publish_during_the_read() -> None:
        deadline = time.monotonic() + 30
        while emu.stats.faults_injected < 2 and time.monotonic() < deadline:
            time.sleep(0.002)
        emu.write(PROJECT, lines(5, first=50))
        emu.publish()

    publisher = threading.Thread(target=publish_during_the_read)
    publisher.start()
    result = run(emu, "tail", str(PROJECT), *where)
    publisher.join()
    assert result.returncode == 0, result.stderr
    assert emu.stats.faults_injected == 2
    assert result.stdout.splitlines() == lines(50 - first, first=first)


@pytest.mark.parametrize("shape", ["401", "hash", "userid"])
def test_bad_credentials_exit_77_and_say_so_without_secrets(shape):
    wrong = "wrong-canary-token-9d2e"
    with Emulator(user_id=USER_ID, api_token=TOKEN, auth_failure=shape).start() as emu:
        emu.add_project(PROJECT, "p")
        deployed(emu, 5)
        result = run(emu, "tail", str(PROJECT), QC_API_TOKEN=wrong)
    assert result.returncode == 77
    assert "refused the credentials" in result.stderr
    assert "token is wrong" in result.stderr
    output = result.stdout + result.stderr
    for secret in (wrong, TOKEN):
        assert secret not in output
        for stamp_ in range(int(time.time()) - 120, int(time.time()) + 5):
            digest = hashlib.sha256(f"{secret}:{stamp_}".encode()).hexdigest()
            assert digest not in output


def test_a_project_without_deployment_is_a_clear_error(emu):
    result = run(emu, "tail", str(PROJECT))
    assert result.returncode == 1
    assert f"project {PROJECT} has no live deployment" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_closed_pipe_ends_quietly_with_0(emu):
    deployed(emu, 5000)
    process = subprocess.Popen(
        qc_tail("tail", str(PROJECT), "--from-start"),
        env=cli_env(emu),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline()
    process.stdout.close()
    assert process.wait(timeout=30) == 0
    with process.stderr:
        assert process.stderr.read() == b""


class Follow(Background):
    """``qc-tail tail -f`` running in the background, its stdout collected line by line."""

    def __init__(self, emu: Emulator, *args: str) -> None:
        command = qc_tail("tail", str(PROJECT), "-f", "--interval", "0.1", *args)
        super().__init__(command, cli_env(emu))

    def stop(self, signum: int) -> tuple[int, str]:
        code, stderr = super().stop(signum)
        assert secrets_in(stderr + "\n".join(self.lines)) == []
        return code, stderr


def wait_for_requests(emu: Emulator, path: str, count: int = 1) -> None:
    deadline = time.monotonic() + 20
    while emu.stats.by_path.get(path, 0) < count and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
def test_follow_delivers_bursts_and_follows_a_redeploy(emu):
    first = deployed(emu, 5)
    follow = Follow(emu, "-n", "2")
    assert follow.wait_for(2) == lines(2, first=3)
    emu.write(PROJECT, lines(40, first=5))
    emu.publish()
    emu.write(PROJECT, lines(555, first=45))
    emu.publish()
    assert follow.wait_for(2 + 595) == lines(600)[3:]
    second = emu.deploy(PROJECT)
    emu.write(PROJECT, ["late line of the first deployment"], deploy_id=first)
    emu.write(PROJECT, lines(300, first=5000))
    emu.publish()
    prefixed = [f"[mean-reversion {second[:10]}] {line}" for line in lines(300, first=5000)]
    expected = [*lines(600)[3:], "late line of the first deployment", *prefixed]
    assert follow.wait_for(len(expected)) == expected
    assert emu.published(PROJECT, second) == lines(300, first=5000)
    code, stderr = follow.stop(signal.SIGINT)
    assert code == 130
    assert "Traceback" not in stderr
    assert follow.lines == expected


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
def test_follow_from_nothing_prints_only_new_lines_and_stops_on_sigterm(emu):
    deployed(emu, 20)
    follow = Follow(emu, "-n", "0")
    wait_for_requests(emu, "/live/logs/read")
    emu.write(PROJECT, ["fresh"])
    emu.publish()
    assert follow.wait_for(1) == ["fresh"]
    code, stderr = follow.stop(signal.SIGTERM)
    assert code == 0
    assert "Traceback" not in stderr


def test_follow_stops_on_a_hangup_with_129(emu):
    deployed(emu, 5)
    follow = Follow(emu, "-n", "1")
    assert follow.wait_for(1) == lines(1, first=4)
    code, stderr = follow.stop(signal.SIGHUP)  # the terminal was closed
    assert code == 129
    assert "Traceback" not in stderr


def test_follow_under_nohup_survives_a_hangup(emu):
    """`nohup qc-tail tail -f`: SIGHUP was ignored when it started, and stays ignored."""
    deployed(emu, 5)
    command = ["nohup", *qc_tail("tail", str(PROJECT), "-f", "--interval", "0.1", "-n", "1")]
    follow = Background(command, cli_env(emu))
    assert follow.wait_for(1) == lines(1, first=4)
    follow.process.send_signal(signal.SIGHUP)
    emu.write(PROJECT, lines(1, first=5))
    emu.publish()
    assert follow.wait_for(2) == lines(2, first=4)  # still following
    code, stderr = follow.stop(signal.SIGTERM)
    assert code == 0, stderr


def test_follow_from_the_kth_line_goes_on_with_new_lines(emu):
    deployed(emu, 5)
    follow = Follow(emu, "-n", "+4")
    assert follow.wait_for(2) == lines(2, first=3)
    emu.write(PROJECT, lines(300, first=5))
    emu.publish()
    assert follow.wait_for(302) == lines(302, first=3)
    code, stderr = follow.stop(signal.SIGTERM)
    assert code == 0, stderr


def redeploy_with_late_lines(emu: Emulator, follow: Follow, first: str, seen: int) -> str:
    """Redeploy; then, twice, a late line of ``first`` and a line of the new deployment."""
    second = emu.deploy(PROJECT)
    for i in (1, 2):
        emu.write(PROJECT, [f"late {i}"], deploy_id=first)
        emu.write(PROJECT, [f"new {i}"])
        emu.publish()
        follow.wait_for(seen + 2 * i)  # each pair in its own poll
    return second


def test_follow_prefixes_lines_once_a_second_deployment_appears(emu):
    first = deployed(emu, 3)
    follow = Follow(emu, "-n", "3")
    assert follow.wait_for(3) == lines(3)
    second = redeploy_with_late_lines(emu, follow, first, seen=3)
    old, new = f"[mean-reversion {first[:10]}] ", f"[mean-reversion {second[:10]}] "
    # every line without a prefix is the first deployment's; from the second's first line on,
    # each says whose it is
    expected = [*lines(3), "late 1", new + "new 1", old + "late 2", new + "new 2"]
    assert follow.wait_for(len(expected)) == expected
    code, stderr = follow.stop(signal.SIGINT)
    assert code == 130, stderr
    assert follow.lines == expected


@pytest.mark.parametrize(
    ("option", "head"), [("--no-prefix", ""), ("--prefix", "[mean-reversion] ")]
)
def test_an_explicit_prefix_choice_holds_across_a_redeploy(emu, option, head):
    first = deployed(emu, 3)
    follow = Follow(emu, "-n", "3", option)
    assert follow.wait_for(3) == [head + line for line in lines(3)]
    second = redeploy_with_late_lines(emu, follow, first, seen=3)
    if head:
        old, new = f"[mean-reversion {first[:10]}] ", f"[mean-reversion {second[:10]}] "
    else:
        old = new = ""
    expected = [head + line for line in lines(3)]
    expected += [head + "late 1", new + "new 1", old + "late 2", new + "new 2"]
    assert follow.wait_for(len(expected)) == expected
    code, stderr = follow.stop(signal.SIGTERM)
    assert code == 0, stderr


def test_json_across_a_redeploy_is_unchanged(emu):
    first = deployed(emu, 1)
    follow = Follow(emu, "-n", "1", "--format", "json")
    assert len(follow.wait_for(1)) == 1
    second = redeploy_with_late_lines(emu, follow, first, seen=1)
    objects = [json.loads(line) for line in follow.wait_for(6)]  # 5 lines, the first's stop
    statuses = [o for o in objects if o["type"] == "status"]
    assert [(o["deploy_id"], o["status"]) for o in statuses] == [(first, "Stopped")]
    objects = [o for o in objects if o["type"] == "line"]
    assert [(o["deploy_id"], o["text"]) for o in objects] == [
        (first, lines(1)[0]),
        (first, "late 1"),
        (second, "new 1"),
        (first, "late 2"),
        (second, "new 2"),
    ]
    code, stderr = follow.stop(signal.SIGTERM)
    assert code == 0, stderr

"""`qc-tail tail` for a trader's terminal, end to end: the real CLI against the emulator.

Several targets by id and name, ``--all``, colour, stop notices, ``--since``, ``--grep``,
the progress line, the demo's banner, and every command's help.
"""

from __future__ import annotations

import json
import math
import os
import pty
import re
import select
import signal
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tailer.cli import build_parser
from tailer.emulator import Emulator, Scenery
from tailer.reader import MAX_WINDOW

from .conftest import (
    PROJECT,
    TOKEN,
    USER_ID,
    Background,
    cli_env,
    clock_env,
    qc_tail,
    run,
    stamp,
)

OTHER = 888
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def lines(n: int, first: int = 0) -> list[str]:
    return [stamp(i) for i in range(first, first + n)]


def two_projects(emu: Emulator) -> tuple[str, str]:
    """mean-reversion (PROJECT) with lines 0..4, Momentum-Crypto (OTHER) with 100..104."""
    emu.add_project(OTHER, "Momentum-Crypto")
    first = emu.deploy(PROJECT)
    emu.write(PROJECT, lines(5))
    other = emu.deploy(OTHER)
    emu.write(OTHER, lines(5, first=100))
    return first, other


def follow(emu: Emulator, *args: str, config: Path | None = None) -> Background:
    options = ("--config", str(config)) if config else ()
    command = qc_tail(*options, "tail", "-f", "--interval", "0.1", *args)
    return Background(command, cli_env(emu))


def wait_until(condition, timeout: float = 30) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(condition())


# -- many targets -------------------------------------------------------------------------


def test_targets_by_id_and_by_name_in_any_case_each_prefixed(emu):
    two_projects(emu)
    result = run(emu, "tail", str(PROJECT), "momentum-CRYPTO", "-n", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        *(f"[mean-reversion] {line}" for line in lines(2, first=3)),
        *(f"[Momentum-Crypto] {line}" for line in lines(2, first=103)),
    ]


def test_one_target_by_name_has_no_prefix(emu):
    two_projects(emu)
    result = run(emu, "tail", "Mean-Reversion", "-n", "2")
    assert result.stdout.splitlines() == lines(2, first=3), result.stderr


def test_an_ambiguous_name_is_a_usage_error_listing_the_candidates(emu):
    two_projects(emu)
    emu.add_project(999, "momentum-crypto")
    result = run(emu, "tail", "momentum-crypto")
    assert result.returncode == 2
    assert "ambiguous" in result.stderr
    assert f"{OTHER} (Momentum-Crypto)" in result.stderr
    assert "999 (momentum-crypto)" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_an_unknown_name_is_a_usage_error_naming_the_projects(emu):
    two_projects(emu)
    result = run(emu, "tail", "no-such-algorithm")
    assert result.returncode == 2
    assert "no-such-algorithm" in result.stderr and "mean-reversion (777)" in result.stderr


@pytest.mark.parametrize(
    "args", [(), ("--all", str(PROJECT)), ("--deploy", "L-1"), ("--deploy", "L-1", "1", "2")]
)
def test_target_usage_errors(emu, args):
    result = run(emu, "tail", *args)
    assert result.returncode == 2, result.stderr
    assert "usage:" in result.stderr


def test_several_targets_interleave_as_lines_arrive(emu):
    two_projects(emu)
    tail = follow(emu, str(PROJECT), str(OTHER), "-n", "0")
    wait_until(lambda: emu.stats.by_path.get("/live/logs/read", 0) >= 4)
    expected = []
    for i in range(3):  # alternately, each in its own snapshot: the output alternates too
        emu.write(PROJECT, [f"mean {i}"])
        expected.append(f"[mean-reversion] mean {i}")
        assert tail.wait_for(len(expected)) == expected
        emu.write(OTHER, [f"momentum {i}"])
        expected.append(f"[Momentum-Crypto] momentum {i}")
        assert tail.wait_for(len(expected)) == expected
    code, stderr = tail.stop(signal.SIGTERM)
    assert code == 0, stderr


def test_all_follows_running_deployments_and_picks_up_new_ones(emu):
    two_projects(emu)
    emu.stop_deployment(OTHER)  # not running: not followed
    tail = follow(emu, "--all", "-n", "1")
    assert tail.wait_for(1) == ["[mean-reversion] " + lines(1, first=4)[0]]
    emu.add_project(555, "pairs-fx")
    emu.deploy(555)
    emu.write(555, ["pairs started", "pairs trading"])  # a new deployment: from its start
    expected = [tail.lines[0], "[pairs-fx] pairs started", "[pairs-fx] pairs trading"]
    assert tail.wait_for(3) == expected
    code, stderr = tail.stop(signal.SIGINT)
    assert code == 130, stderr
    assert tail.lines == expected
    assert "Momentum-Crypto" not in "\n".join(tail.lines)


def test_all_without_follow_prints_each_running_deployment(emu):
    two_projects(emu)
    result = run(emu, "tail", "--all", "-n", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted(
        ["[mean-reversion] " + stamp(4), "[Momentum-Crypto] " + stamp(104)]
    )


# -- told when an algorithm stops ---------------------------------------------------------


def test_a_stop_is_announced_on_stderr_and_a_project_waits_for_its_redeploy(emu):
    emu.deploy(PROJECT)
    emu.write(PROJECT, lines(3))
    tail = follow(emu, str(PROJECT), "-n", "3")
    assert tail.wait_for(3) == lines(3)
    emu.stop_deployment(PROJECT, "RuntimeError")
    pattern = r"qc-tail: \[mean-reversion\] stopped: RuntimeError at \d\d:\d\d:\d\d UTC"
    assert wait_until(lambda: re.search(pattern, tail.stderr())), tail.stderr()
    assert "waiting for a redeploy" in tail.stderr()
    assert tail.process.poll() is None  # still following
    second = emu.deploy(PROJECT)
    emu.write(PROJECT, ["after the redeploy"])
    assert tail.wait_for(4)[-1] == f"[mean-reversion {second[:10]}] after the redeploy"
    code, stderr = tail.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert len(re.findall(pattern, stderr)) == 1  # once


def test_json_carries_a_status_object_when_a_deployment_stops(emu):
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, lines(2))
    tail = follow(emu, str(PROJECT), "-n", "2", "--format", "json")
    assert len(tail.wait_for(2)) == 2
    emu.stop_deployment(PROJECT, "Liquidated")
    status = json.loads(tail.wait_for(3)[2])
    assert {k: status[k] for k in ("type", "project_id", "deploy_id", "name", "status")} == {
        "type": "status",
        "project_id": PROJECT,
        "deploy_id": deploy_id,
        "name": "mean-reversion",
        "status": "Liquidated",
    }
    assert status["stopped"] is not None
    tail.stop(signal.SIGTERM)


def test_deploy_follow_exits_0_once_stopped_and_its_late_lines_drained(emu, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[poll]\ndrain = 3\n")
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, lines(2))
    tail = follow(emu, str(PROJECT), "--deploy", deploy_id, "-n", "2", config=config)
    assert tail.wait_for(2) == lines(2)
    emu.stop_deployment(PROJECT, "Stopped")
    emu.write(PROJECT, ["a late line"], deploy_id=deploy_id)  # published after the stop
    tail.process.wait(timeout=60)  # on its own: a hang guard, not a timing
    code, stderr = tail.stop(signal.SIGTERM)  # collects what it wrote (it has exited)
    assert code == 0, stderr
    assert tail.lines == [*lines(2), "a late line"]
    assert "qc-tail: [mean-reversion] stopped: Stopped at " in stderr
    assert "waiting for a redeploy" not in stderr


# -- colour -------------------------------------------------------------------------------


def in_a_pty(emu: Emulator, *args: str, **env: str) -> str:
    """What the CLI writes to a terminal (a pseudo-terminal as its stdout)."""
    leader, follower_fd = pty.openpty()
    process = subprocess.Popen(
        qc_tail(*args),
        env=cli_env(emu, **env),
        stdout=follower_fd,
        stderr=subprocess.DEVNULL,
    )
    os.close(follower_fd)
    out = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            out += chunk
        elif process.poll() is not None:
            break
    process.wait(timeout=10)
    os.close(leader)
    return out.decode().replace("\r\n", "\n")


def test_colour_on_a_terminal_one_per_target(emu):
    two_projects(emu)
    shown = in_a_pty(emu, "tail", str(PROJECT), str(OTHER), "-n", "1")
    mean, momentum = shown.splitlines()
    assert mean == f"\x1b[36m[mean-reversion]\x1b[0m {stamp(4)}"
    assert momentum == f"\x1b[33m[Momentum-Crypto]\x1b[0m {stamp(104)}"


@pytest.mark.parametrize(("args", "env"), [(("--color", "never"), {}), ((), {"NO_COLOR": "1"})])
def test_no_colour_on_a_terminal_when_asked(emu, args, env):
    two_projects(emu)
    shown = in_a_pty(emu, "tail", str(PROJECT), str(OTHER), "-n", "1", *args, **env)
    assert shown.splitlines() == [f"[mean-reversion] {stamp(4)}", f"[Momentum-Crypto] {stamp(104)}"]


def test_no_colour_in_a_pipe_unless_always(emu):
    two_projects(emu)
    piped = run(emu, "tail", str(PROJECT), str(OTHER), "-n", "1")
    assert not ANSI.search(piped.stdout) and piped.stdout.count("\n") == 2
    forced = run(emu, "tail", str(PROJECT), str(OTHER), "-n", "1", "--color", "always")
    assert ANSI.sub("", forced.stdout) == piped.stdout
    assert "\x1b[36m[mean-reversion]\x1b[0m" in forced.stdout


# -- --since and --grep -------------------------------------------------------------------


def test_since_bisects_to_its_start_in_about_log2_windows_requests(emu):
    windows = 64
    emu.deploy(PROJECT)
    emu.write(PROJECT, lines(windows * MAX_WINDOW))
    first = windows * MAX_WINDOW - 300  # its stamp: day 1, 04:12:36
    since = datetime.fromisoformat(stamp(first)[:19]).isoformat()
    emu.stats.reset()
    by_since = run(emu, "tail", str(PROJECT), "--since", since)
    reads_since = emu.stats.by_path["/live/logs/read"]
    assert by_since.returncode == 0, by_since.stderr
    assert by_since.stdout.splitlines() == lines(300, first=first)
    emu.stats.reset()
    by_count = run(emu, "tail", str(PROJECT), "-n", "300")  # the same lines, found by count
    assert by_count.stdout == by_since.stdout
    finding = reads_since - emu.stats.by_path["/live/logs/read"]
    assert finding <= math.log2(windows) + 2, finding


def test_since_a_span_before_now_in_the_algorithms_time_zone(emu):
    zone = ZoneInfo("America/New_York")  # the default algorithm zone
    now = datetime.now(zone).replace(tzinfo=None, microsecond=0)
    stamped = [now - timedelta(minutes=m) for m in (300, 200, 100, 60, 30, 5)]
    texts = [f"{at:%Y-%m-%d %H:%M:%S} event {i}" for i, at in enumerate(stamped)]
    emu.deploy(PROJECT)
    emu.write(PROJECT, ["no timestamp", *texts])
    result = run(emu, "tail", str(PROJECT), "--since", "2h")
    assert result.stdout.splitlines() == texts[2:], result.stderr


def test_since_without_a_matching_line_prints_nothing(emu):
    emu.deploy(PROJECT)
    emu.write(PROJECT, lines(10))
    result = run(emu, "tail", str(PROJECT), "--since", "2030-01-01")
    assert (result.returncode, result.stdout) == (0, "")


@pytest.mark.parametrize("when", ["yesterday", "2h ago", "2026-11-30T14:00+01:00"])
def test_since_refuses_what_it_cannot_read(emu, when):
    result = run(emu, "tail", str(PROJECT), "--since", when)
    assert result.returncode == 2 and "--since" in result.stderr


def test_grep_keeps_the_lines_holding_the_word_in_any_case(emu):
    emu.deploy(PROJECT)
    texts = ["ORDER filled", "heartbeat", "order cancelled", "Reorder check", "debug"]
    emu.write(PROJECT, texts)
    result = run(emu, "tail", str(PROJECT), "--from-start", "--grep", "Order")
    assert result.stdout.splitlines() == ["ORDER filled", "order cancelled", "Reorder check"]


def test_grep_with_follow_and_json(emu):
    emu.deploy(PROJECT)
    tail = follow(emu, str(PROJECT), "-n", "0", "--grep", "fill", "--format", "json")
    wait_until(lambda: emu.stats.by_path.get("/live/logs/read", 0) >= 2)
    emu.write(PROJECT, ["debug", "2026-03-01 10:00:00 Order FILLED", "heartbeat"])
    (obj,) = (json.loads(line) for line in tail.wait_for(1))
    assert (obj["text"], obj["line"], obj["time"]) == (
        "2026-03-01 10:00:00 Order FILLED",
        1,
        "2026-03-01T10:00:00",
    )
    code, _ = tail.stop(signal.SIGTERM)
    assert code == 0 and len(tail.lines) == 1


# -- the progress line --------------------------------------------------------------------


def test_progress_on_a_terminals_stderr_never_in_a_pipe(tmp_path):
    with Emulator(user_id=USER_ID, api_token=TOKEN, latency=0.05).start() as slow:
        slow.add_project(PROJECT, "mean-reversion")
        slow.deploy(PROJECT)
        slow.write(PROJECT, lines(150 * MAX_WINDOW))
        leader, terminal = pty.openpty()
        out = tmp_path / "all.log"
        windows = tmp_path / "windows.toml"  # an export would end the catch-up at once
        windows.write_text('[api]\nexport = "never"\n')
        with out.open("w") as sink:
            process = subprocess.Popen(
                qc_tail("--config", str(windows), "tail", str(PROJECT), "--from-start"),
                env=cli_env(slow),
                stdout=sink,
                stderr=terminal,
            )
            os.close(terminal)
            shown = b""
            while True:
                ready, _, _ = select.select([leader], [], [], 0.5)
                if ready:
                    try:
                        chunk = os.read(leader, 65536)
                    except OSError:
                        break
                    if not chunk:
                        break
                    shown += chunk
                elif process.poll() is not None:
                    break
            assert process.wait(timeout=120) == 0
        os.close(leader)
        text = shown.decode()
        assert re.search(r"qc-tail: [\d,]+ lines, [\d,]+/s, [\d,]+ left", text), text
        assert text.rfind("\r\x1b[K") > text.rfind(" left")  # wiped once caught up
        assert out.read_text().count("\n") == 150 * MAX_WINDOW
        piped = run(slow, "tail", str(PROJECT), "--from-start")
        assert " left" not in piped.stderr


# -- the demo and the help ----------------------------------------------------------------


def test_the_demo_banner_says_what_it_is_and_its_commands_work():
    demo = Background(qc_tail("demo", "--seconds", "60"), {**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert wait_until(lambda: "qc-tail tail" in demo.stderr()), demo.stderr()
        banner = demo.stderr()
        assert "built-in emulator" in banner
        exports = dict(re.findall(r"^  export (QC_\w+)=(\S+)$", banner, re.M))
        assert set(exports) == {"QC_BASE_URL", "QC_USER_ID", "QC_API_TOKEN"}
        commands = re.findall(r"^  (qc-tail (?:list|tail).*)$", banner, re.M)
        assert len(commands) == 3
        env = {"PATH": os.environ.get("PATH", ""), **clock_env(), **exports}
        for command in commands:
            words = command.split()[1:]
            if "-f" in words:
                words.remove("-f")  # the snapshot, so that it ends
            done = subprocess.run(
                qc_tail(*words), env=env, capture_output=True, text=True, timeout=60, check=False
            )
            assert done.returncode == 0, (command, done.stderr)
        assert demo.wait_for(1)  # and it shows lines, on stdout without the banner
        assert not any("export" in line or "qc-tail" in line for line in demo.lines)
    finally:
        demo.stop(signal.SIGINT)


def help_of(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["tail", "run", "list", "check", "demo", "emulator"])
def test_every_command_help_ends_with_examples_and_exit_codes(command, capsys):
    text = help_of(command, capsys)
    examples, codes = text.index("\nexamples"), text.index("\nexit codes:")
    assert examples < codes
    assert f"qc-tail {command}" in text[examples:codes]
    assert "  0    ok" in text[codes:] and "  2    usage" in text[codes:]


def test_interval_has_help_text(capsys):
    assert re.search(r"--interval SECONDS\s+poll every SECONDS, fixed", help_of("tail", capsys))


def test_readme_examples_name_projects_of_the_emulator():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    with Emulator(user_id=USER_ID, api_token=TOKEN) as emulator:
        scenery = Scenery(emulator)  # as `qc-tail emulator` starts it (seed 0)
        ids = {str(i) for i in scenery.project_ids}
        names = {a.name for a in scenery.algorithms}
    used = set(re.findall(r"qc-tail tail ([\w-]+)", readme)) - {"--all"}
    assert used and used <= ids | names, used - ids - names


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_know_every_option(shell):
    result = subprocess.run(
        qc_tail("completion", shell), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "qc-tail" in result.stdout
    for option in ("--since", "--grep", "--color", "--all"):
        assert option in result.stdout

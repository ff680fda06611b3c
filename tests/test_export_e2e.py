"""Export-fed catch-ups end to end: the real CLI, killed and measured, against the emulator."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tailer.emulator import Emulator, Fault, bench_line

from .conftest import PROJECT, TOKEN, USER_ID, cli_env, kill_when, qc_tail, run
from .test_run_e2e import config, finish, torn_outputs

EXPORT = "/live/export/logs"
READ = "/live/logs/read"


@pytest.fixture
def big() -> Emulator:
    """No trimming: these tests check delivery, not retention."""
    with Emulator(user_id=USER_ID, api_token=TOKEN, max_lines=10**7, seed=5).start() as emu:
        emu.add_project(PROJECT, "backfill")
        emu.deploy(PROJECT)
        yield emu
        assert emu.stats.oversized_windows == 0


def api_config(tmp_path: Path, export: str) -> Path:
    path = tmp_path / f"export-{export}.toml"
    path.write_text(f'[api]\nexport = "{export}"\n')
    return path


@pytest.mark.parametrize("export", ["auto", "never"])
def test_tail_from_start_reads_a_large_backlog_from_one_export_unless_told_never(
    tmp_path, big, export
):
    lines = [bench_line(i) for i in range(20_000)]
    big.write(PROJECT, lines)
    result = run(
        big, "--config", str(api_config(tmp_path, export)), "tail", str(PROJECT), "--from-start"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == lines
    if export == "auto":
        assert big.stats.by_path[EXPORT] == 1
        # No window the export holds is asked for, even ahead: besides the export, the
        # current deployment (asked twice), /live/list (which tells a lagging /live/read),
        # the probe and the end.
        assert big.stats.requests <= 6
    else:
        assert EXPORT not in big.stats.by_path
        assert big.stats.by_path[READ] > 20_000 // 249


def test_tail_plus_k_starts_at_line_k_of_the_export(tmp_path, big):
    lines = [bench_line(i) for i in range(12_000)]
    big.write(PROJECT, lines)
    result = run(big, "tail", str(PROJECT), "-n", "+1001")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == lines[1000:]
    assert big.stats.by_path[EXPORT] == 1


def test_a_failed_export_says_why_once_on_stderr_and_tail_reads_windows(tmp_path, big):
    lines = [bench_line(i) for i in range(12_000)]
    big.write(PROJECT, lines)
    big.export.enabled = False
    result = run(big, "--log-format", "json", "tail", str(PROJECT), "--from-start")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == lines
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    said = [e for e in events if e["event"] == "export_fallback"]
    assert [e["reason"] for e in said] == ["unknown_endpoint"]
    assert "Traceback" not in result.stderr


def test_kill_9_inside_an_export_fed_catch_up_loses_and_repeats_nothing(tmp_path, big):
    """Each round adds a backlog, starts the daemon, and kills it once it writes lines the
    export gave (half the kills between a file write and its cursor save)."""
    rng = random.Random(15)
    path = config(tmp_path, big, follows=[PROJECT], discovery=False, start="deployment")
    out = tmp_path / "out" / str(PROJECT) / f"{big.deploy_ids(PROJECT)[-1]}.log"
    written = 0
    torn = 0
    for round_ in range(6):
        big.write(PROJECT, [f"{bench_line(i)} r{round_}" for i in range(15_000)])
        before = out.stat().st_size if out.exists() else 0
        served = big.export.served
        process = subprocess.Popen(
            qc_tail("--config", str(path), "run"),
            env=cli_env(big),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

        def feeding(before: int = before, served: int = served) -> bool:
            grown = out.exists() and out.stat().st_size > before
            return big.export.served > served and grown

        if round_ % 2:
            torn += kill_when(process, lambda: feeding() and torn_outputs(tmp_path) > 0, rng)
        else:
            kill_when(process, feeding, rng)
        finish(process)
        written = out.stat().st_size if out.exists() else 0
    result = run(big, "--config", str(path), "run", "--once")
    assert result.returncode == 0, result.stderr
    assert out.read_text().splitlines() == big.published(PROJECT, big.deploy_ids(PROJECT)[-1])
    assert big.export.served >= 6
    assert written > 0
    assert torn >= 1, "no kill landed between a file write and its cursor save"


# The kernel's peak RSS of a child includes what its parent held when it was started (the
# memory it had until exec): a small launcher starts the CLI, so the test process's is not.
LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def peak_rss_mb(emu: Emulator, *args: str) -> float:
    """The peak resident memory of the CLI run to its end, from the kernel (wait4)."""
    launched = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, *qc_tail(*args)],
        env=cli_env(emu),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    code, peak_kb = launched.stdout.split()
    assert code == "0"
    return int(peak_kb) / 1024


def test_memory_stays_flat_however_large_the_exported_backlog(tmp_path):
    peaks = []
    for n in (1_000, 100_000):
        with Emulator(user_id=USER_ID, api_token=TOKEN).start() as emu:
            emu.add_project(PROJECT, "backfill")
            emu.deploy(PROJECT)
            emu.write(PROJECT, [bench_line(i) for i in range(n)])
            peaks.append(peak_rss_mb(emu, "tail", str(PROJECT), "--from-start"))
            assert emu.stats.by_path.get(EXPORT, 0) == (n > 10_000)
    small, large = peaks
    assert large - small < 10, (
        f"peak RSS {small:.1f} MB for 1,000 lines, {large:.1f} MB for 100,000"
    )


@pytest.mark.parametrize("command", ["run", "tail"])
def test_a_stop_during_a_slow_export_exits_promptly_with_nothing_doubled(tmp_path, big, command):
    big.write(PROJECT, [bench_line(i) for i in range(12_000)])
    big.faults.script([Fault("slow", delay=30)], path=EXPORT)
    path = config(tmp_path, big, follows=[PROJECT], discovery=False, start="deployment")
    args = ["run"] if command == "run" else ["tail", str(PROJECT), "--from-start"]
    process = subprocess.Popen(
        qc_tail("--config", str(path), *args),
        env=cli_env(big),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60  # a hang guard
    while big.stats.by_path.get(EXPORT, 0) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # inside the export's answer, which takes its time
    process.send_signal(signal.SIGTERM)
    assert big.stats.by_path.get(EXPORT, 0) == 1
    code, stderr = finish(process, timeout=10)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    if command == "run":
        result = run(big, "--config", str(path), "run", "--once")
        assert result.returncode == 0, result.stderr
        out = tmp_path / "out" / str(PROJECT) / f"{big.deploy_ids(PROJECT)[-1]}.log"
        assert out.read_text().splitlines() == [bench_line(i) for i in range(12_000)]

"""`qc-tail run` against redeploys, end to end: where a deployment that follows one already
read begins, whatever ``start`` says (the real CLI against the emulator)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tailer.emulator import Emulator

from .conftest import PROJECT, stamp
from .test_run_e2e import config, cursor_of, daemon, finish, output_of, run


def wait_until(condition, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def drained_then_dropped(tmp_path: Path, emu: Emulator) -> tuple[Path, str]:
    """Discovery with ``start = "end"``: a daemon follows deployment A (lines after it began),
    A stops, and the daemon drains it and lets it go (its cursor done)."""
    first = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(n) for n in range(30)])
    path = config(tmp_path, emu, start="end")
    process = daemon(path, emu)
    try:
        assert wait_until(lambda: (tmp_path / "state/cursors" / str(PROJECT)).exists())
        emu.write(PROJECT, [stamp(n) for n in range(30, 40)])
        assert wait_until(lambda: len(output_of(tmp_path, PROJECT, first)) == 10)
        emu.stop_deployment(PROJECT)
        assert wait_until(lambda: cursor_of(tmp_path, PROJECT, first)["done"])
    finally:
        process.send_signal(signal.SIGTERM)
        code, stderr = finish(process)
    assert code == 0, stderr
    return path, first


def test_a_redeploy_while_down_after_a_drained_deployment_is_read_from_its_first_line(
    tmp_path, emu
):
    """The project was followed: its next deployment is a redeploy, read whole, as it is
    when the previous one was still unfinished at the restart (or still running)."""
    path, first = drained_then_dropped(tmp_path, emu)
    second = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(n) for n in range(100, 120)])
    result = run(emu, "--config", str(path), "run", "--once")
    assert result.returncode == 0, result.stderr
    assert output_of(tmp_path, PROJECT, first) == [stamp(n) for n in range(30, 40)]
    assert output_of(tmp_path, PROJECT, second) == emu.published(PROJECT, second)


def test_a_redeploy_found_by_discovery_after_the_last_deployment_was_let_go_is_read_whole(
    tmp_path, emu
):
    """The same in one run: discovery lets the stopped deployment go, then finds the next
    one some polls later; the lines it logged meanwhile are read."""
    first = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(n) for n in range(30)])
    process = daemon(config(tmp_path, emu, start="end"), emu)
    try:
        assert wait_until(lambda: (tmp_path / "state/cursors" / str(PROJECT)).exists())
        emu.stop_deployment(PROJECT)
        assert wait_until(lambda: cursor_of(tmp_path, PROJECT, first)["done"])
        second = emu.deploy(PROJECT)
        emu.write(PROJECT, [stamp(n) for n in range(100, 120)])
        expected = emu.published(PROJECT, second)
        wait_until(lambda: output_of(tmp_path, PROJECT, second) == expected)
    finally:
        process.send_signal(signal.SIGTERM)
        code, stderr = finish(process)
    assert code == 0, stderr
    assert output_of(tmp_path, PROJECT, second) == expected


def test_every_deployment_launched_while_down_after_a_drained_one_is_read(tmp_path, emu):
    """Two redeploys while down after the last deployment was let go: the one between is
    read whole too, not skipped for the current one."""
    path, first = drained_then_dropped(tmp_path, emu)
    between = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(n) for n in range(100, 120)])
    current = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(n) for n in range(200, 210)])
    result = run(emu, "--config", str(path), "run", "--once")
    assert result.returncode == 0, result.stderr
    assert output_of(tmp_path, PROJECT, first) == [stamp(n) for n in range(30, 40)]
    assert output_of(tmp_path, PROJECT, between) == [stamp(n) for n in range(100, 120)]
    assert output_of(tmp_path, PROJECT, current) == [stamp(n) for n in range(200, 210)]

"""`qc-tail run` end to end: the real daemon, killed and restarted, against the emulator."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tailer.emulator import Emulator

from .conftest import (
    PROJECT,
    TOKEN,
    UNKNOWNS,
    USER_ID,
    VARIANTS,
    Background,
    assert_no_secrets_under,
    cli_env,
    fill,
    kill_when,
    qc_tail,
    run,
    secrets_in,
    stamp,
    tmpfs,
)

PROJECTS = (101, 202, 303)


def config(
    tmp_path: Path,
    emu: Emulator,
    *,
    follows=(),
    discovery=True,
    start="project",
    state: Path | None = None,
    **output,
) -> Path:
    """A config file for the daemon, pointed at the emulator and at tmp_path."""
    lines = [
        "[api]",
        f'base_url = "{emu.base_url}"',
        f"user_id = {USER_ID}",
        "timeout = 5",
        "[poll]",
        "interval = 0.05",
        "max_interval = 0.2",
        "drain = 1",
        "[state]",
        f'dir = "{state or tmp_path / "state"}"',
        "[discovery]",
        f"enabled = {str(discovery).lower()}",
        "interval = 0.5",
        f'start = "{start}"',
        "[output]",
    ]
    if output.get("stdout"):
        lines.append("stdout = true")
    if output.get("directory", tmp_path / "out") is not None:
        lines.append(f'directory = "{output.get("directory", tmp_path / "out")}"')
    for project_id in follows:
        lines += ["[[follow]]", f"project_id = {project_id}"]
    path = tmp_path / "qc-tail.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def daemon(path: Path, emu: Emulator, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        qc_tail("--config", str(path), "run", *args),
        env=cli_env(emu),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float = 20) -> tuple[int, str]:
    code = process.wait(timeout=timeout)
    assert process.stderr is not None
    with process.stderr:
        stderr = process.stderr.read()
    assert secrets_in(stderr) == []
    return code, stderr


@pytest.fixture(autouse=True)
def no_secrets_left(tmp_path: Path) -> Iterator[None]:
    """After each test: no output file or cursor holds the token or anything made from it."""
    yield
    assert_no_secrets_under(tmp_path)


def output_of(tmp_path: Path, project_id: int, deploy_id: str) -> list[str]:
    path = tmp_path / "out" / str(project_id) / f"{deploy_id}.log"
    return path.read_text().splitlines() if path.exists() else []


def written_bytes(tmp_path: Path) -> int:
    return sum(path.stat().st_size for path in (tmp_path / "out").glob("*/*.log"))


def cursor_of(tmp_path: Path, project_id: int, deploy_id: str) -> dict:
    path = tmp_path / "state" / "cursors" / str(project_id) / f"{deploy_id}.json"
    return json.loads(path.read_text())


def with_projects(emu: Emulator) -> Emulator:
    for project_id in PROJECTS:
        emu.add_project(project_id, f"algo-{project_id}")
        emu.deploy(project_id)
    return emu


@pytest.fixture
def fleet(emu: Emulator) -> Emulator:
    return with_projects(emu)


@pytest.fixture
def big_fleet(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """No trimming: the chaos test checks delivery, not retention. Parametrized indirectly, it
    takes the switches of one of ``UNKNOWNS``."""
    switches = getattr(request, "param", {})
    with Emulator(USER_ID, TOKEN, max_lines=10**7, seed=3, **switches).start() as emu:
        yield with_projects(emu)
        assert emu.stats.oversized_windows == 0


def assert_every_deployment_exact(tmp_path: Path, emu: Emulator) -> int:
    total = 0
    for project_id in PROJECTS:
        for deploy_id in emu.deploy_ids(project_id):
            expected = emu.published(project_id, deploy_id)
            assert output_of(tmp_path, project_id, deploy_id) == expected, (project_id, deploy_id)
            total += len(expected)
    return total


def test_run_once_writes_each_deployment_to_its_file(tmp_path, fleet):
    for i, project_id in enumerate(PROJECTS):
        fleet.write(project_id, [stamp(n) for n in range(300 * (i + 1))])
    fleet.publish()
    result = run(fleet, "--config", str(config(tmp_path, fleet)), "run", "--once")
    assert result.returncode == 0, result.stderr
    assert assert_every_deployment_exact(tmp_path, fleet) == 1800
    out = tmp_path / "out"
    assert out.stat().st_mode & 0o777 == 0o750
    for project_id in PROJECTS:
        for log in (out / str(project_id)).iterdir():
            assert log.stat().st_mode & 0o777 == 0o640
    state = tmp_path / "state" / "cursors" / str(PROJECTS[0])
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in state.iterdir())


def test_a_restored_output_directory_keeps_every_line_across_a_restart(tmp_path, fleet):
    """The output directory copied away and back (a restore, rsync, ``cp -a`` across file
    systems): the same bytes in new inodes. The restart checks them by content and keeps them."""
    path = config(tmp_path, fleet)
    for project_id in PROJECTS:
        fleet.write(project_id, [stamp(n) for n in range(1001)])
    fleet.publish()
    assert run(fleet, "--config", str(path), "run", "--once").returncode == 0
    out = tmp_path / "out"
    inodes = {p: p.stat().st_ino for p in out.glob("*/*.log")}
    shutil.copytree(out, tmp_path / "backup", copy_function=shutil.copy2)
    out.rename(tmp_path / "gone")  # still held: the copies cannot reuse their inodes
    shutil.copytree(tmp_path / "backup", out, copy_function=shutil.copy2)
    shutil.rmtree(tmp_path / "gone")
    assert all(p.stat().st_ino != inode for p, inode in inodes.items())
    for project_id in PROJECTS:
        fleet.write(project_id, [stamp(n) for n in range(1001, 1011)])
    fleet.publish()
    result = run(fleet, "--config", str(path), "run", "--once")
    assert result.returncode == 0, result.stderr
    assert assert_every_deployment_exact(tmp_path, fleet) == 3 * 1011
    assert not list(out.glob("*/*.unverified*"))
    assert '"level": "warning"' not in result.stderr


class Writer:
    """Lines keep arriving on every project, in snapshots, with a redeploy now and then."""

    def __init__(self, emu: Emulator, seed: int) -> None:
        self.emu = emu
        self.rng = random.Random(seed)
        self.count = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            project_id = self.rng.choice(PROJECTS)
            burst = self.rng.randint(1, 300)
            self.emu.write(project_id, [stamp(self.count + i) for i in range(burst)])
            self.count += burst
            if self.rng.random() < 0.02:
                self.emu.deploy(project_id)
            self.emu.publish()
            self.stop.wait(self.rng.uniform(0.01, 0.1))

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def torn_outputs(tmp_path: Path) -> int:
    """Files holding lines their saved cursor does not account for (a kill between the two)."""
    torn = 0
    for path in (tmp_path / "state" / "cursors").glob("*/*.json"):
        cursor = json.loads(path.read_text())
        log = tmp_path / "out" / str(cursor["project_id"]) / f"{cursor['deploy_id']}.log"
        torn += log.exists() and log.stat().st_size > (
            cursor["marks"].get("file", {}).get("size") or 0
        )
    return torn


# Without trimming, numbering does not matter; the window rule is met by what is sent.
@pytest.mark.parametrize(
    "big_fleet",
    [UNKNOWNS["documented"], UNKNOWNS["past-end-error"], UNKNOWNS["bare-answers"]],
    ids=["documented", "past-end-error", "bare-answers"],
    indirect=True,
)
def test_chaos_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path, big_fleet):
    fleet = big_fleet
    rng = random.Random(2026)
    path = config(tmp_path, fleet)
    faults = ("503", "empty500", "reset", "truncated", "429", "auth", "500", "502")
    fleet.faults.random(rate=0.05, kinds=faults, seed=11)
    torn = 0
    with Writer(fleet, seed=5):
        kill = 0
        while kill < 16 or (torn < 4 and kill < 40):  # on a loaded machine aim some more
            kill += 1
            project_id = rng.choice(PROJECTS)
            fleet.write(project_id, [f"backlog {kill} {n}" for n in range(10_000)])
            fleet.publish()
            before = written_bytes(tmp_path)
            process = daemon(path, fleet)
            deadline = time.monotonic() + 5
            while written_bytes(tmp_path) == before and time.monotonic() < deadline:
                time.sleep(0.002)
            if kill % 2:  # half the kills at a random instant, half inside the write window
                time.sleep(rng.uniform(0, 0.5))
                process.send_signal(signal.SIGKILL)
            else:
                torn += kill_when(process, lambda: torn_outputs(tmp_path) > 0, rng)
            finish(process)
    fleet.faults.clear()
    result = run(fleet, "--config", str(path), "run", "--once")
    assert result.returncode == 0, result.stderr
    assert torn >= 4, f"only {torn} kills landed between a file write and its cursor save"
    delivered = assert_every_deployment_exact(tmp_path, fleet)
    assert delivered > 160_000
    assert fleet.stats.faults_injected > 0


def test_sigterm_mid_catch_up_exits_0_quickly_with_cursor_equal_to_output(tmp_path, fleet):
    project_id = PROJECTS[0]
    deploy_id = fleet.deploy_ids(project_id)[-1]
    fleet.write(project_id, [stamp(n) for n in range(60_000)])
    fleet.publish()
    path = config(tmp_path, fleet, follows=[project_id], discovery=False)
    process = daemon(path, fleet)
    deadline = time.monotonic() + 20
    while len(output_of(tmp_path, project_id, deploy_id)) < 2000 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code, stderr = finish(process)
    assert code == 0, stderr
    assert time.monotonic() - started < 2
    written = output_of(tmp_path, project_id, deploy_id)
    assert 0 < len(written) < 60_000, "stopped mid catch-up"
    cursor = cursor_of(tmp_path, project_id, deploy_id)
    assert cursor["position"] == len(written)
    log = tmp_path / "out" / str(project_id) / f"{deploy_id}.log"
    assert cursor["marks"]["file"]["size"] == log.stat().st_size
    assert written == fleet.published(project_id, deploy_id)[: len(written)]


def test_corrupt_state_exits_78_naming_the_file(tmp_path, fleet):
    fleet.write(PROJECTS[0], ["a line"])
    fleet.publish()
    path = config(tmp_path, fleet)
    assert run(fleet, "--config", str(path), "run", "--once").returncode == 0
    cursor = next((tmp_path / "state" / "cursors").glob("*/*.json"))
    cursor.write_text('{"version": 1, "position": ')
    result = run(fleet, "--config", str(path), "run", "--once")
    assert result.returncode == 78
    assert str(cursor) in result.stderr
    assert "Traceback" not in result.stderr
    assert cursor.read_text() == '{"version": 1, "position": '


@pytest.mark.parametrize("mark", [{"size": "12"}, {"size": -1}, {"inode": 1.5}, {"last": 7}])
def test_an_output_mark_edited_by_hand_exits_78_naming_the_file(tmp_path, fleet, mark):
    """Each output reads its own mark in a cursor: one that is not what it makes is refused
    as a corrupt cursor is, naming the file, and nothing is touched."""
    fleet.write(PROJECTS[0], ["a line"])
    fleet.publish()
    path = config(tmp_path, fleet)
    assert run(fleet, "--config", str(path), "run", "--once").returncode == 0
    cursor = next((tmp_path / "state" / "cursors").glob("*/*.json"))
    document = json.loads(cursor.read_text())
    document["marks"]["file"].update(mark)
    cursor.write_text(json.dumps(document))
    log = next((tmp_path / "out").glob("*/*.log"))
    result = run(fleet, "--config", str(path), "run", "--once")
    assert result.returncode == 78, result.stderr
    assert str(cursor) in result.stderr and "its file mark is not" in result.stderr
    assert "Traceback" not in result.stderr
    assert log.read_text() == "a line\n"


@pytest.mark.parametrize("key", ["state", "directory"])
@pytest.mark.parametrize("where", ["under-a-file", "under-proc"])
def test_a_directory_that_cannot_be_made_exits_73_saying_which(tmp_path, fleet, key, where):
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "sub" if where == "under-a-file" else Path("/proc/qc-tail-test")
    path = config(tmp_path, fleet, **{key: bad})
    result = run(fleet, "--config", str(path), "run", "--once")
    assert result.returncode == 73, result.stderr
    assert "Traceback" not in result.stderr
    name = "state.dir" if key == "state" else "output.directory"
    assert f"qc-tail: error: {name} = {bad}: cannot create or write there" in result.stderr


def test_a_full_state_directory_mid_run_is_waited_out_and_nothing_is_doubled(tmp_path, fleet):
    """The state directory on a real tmpfs: filled while lines keep coming, then freed."""
    project_id = PROJECTS[0]
    deploy_id = fleet.deploy_ids(project_id)[-1]
    fleet.write(project_id, [stamp(n) for n in range(100)])
    fleet.publish()
    with tmpfs(tmp_path / "statefs", "256k") as statefs:
        path = config(
            tmp_path, fleet, follows=[project_id], discovery=False, state=statefs / "state"
        )
        cursor = statefs / "state" / "cursors" / str(project_id) / f"{deploy_id}.json"
        process = Background(qc_tail("--config", str(path), "run"), cli_env(fleet))
        try:
            assert wait_until(lambda: cursor.exists() and position(cursor) == 100)
            fill(statefs / "filler")
            fleet.write(project_id, [stamp(n) for n in range(100, 250)])
            fleet.publish()
            assert wait_until(lambda: '"poll_failing"' in process.stderr())
            assert len(output_of(tmp_path, project_id, deploy_id)) == 250
            assert position(cursor) == 100  # the lines are out; their cursor could not follow
            (statefs / "filler").unlink()
            assert wait_until(lambda: '"poll_recovered"' in process.stderr())
            assert position(cursor) == 250
        finally:
            code, stderr = process.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert "Traceback" not in stderr and secrets_in(stderr) == []
    assert output_of(tmp_path, project_id, deploy_id) == fleet.published(project_id, deploy_id)
    failing = [line for line in stderr.splitlines() if '"poll_failing"' in line]
    assert len(failing) == 1 and "cannot save a cursor: the disk is full" in failing[0], stderr
    assert sum('"poll_recovered"' in line for line in stderr.splitlines()) == 1, stderr


def position(cursor: Path) -> int:
    return int(json.loads(cursor.read_text())["position"])


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> bool:
    """A hang guard: True once ``condition`` holds, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def closing_stdout(path: Path, emu: Emulator, project_id: int) -> subprocess.Popen[str]:
    """The daemon, once its stdout's reader has read a line and gone away, and more lines
    have been published (so stdout is written to after it was closed)."""
    process = subprocess.Popen(
        qc_tail("--config", str(path), "run"),
        env=cli_env(emu),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline()
    process.stdout.close()
    emu.write(project_id, [stamp(n) for n in range(5, 400)])
    emu.publish()
    return process


def test_run_goes_on_with_the_files_when_its_stdout_is_closed(tmp_path, fleet):
    project_id = PROJECTS[0]
    deploy_id = fleet.deploy_ids(project_id)[-1]
    fleet.write(project_id, [stamp(n) for n in range(5)])
    fleet.publish()
    path = config(tmp_path, fleet, follows=[project_id], discovery=False, stdout=True)
    process = closing_stdout(path, fleet, project_id)
    try:
        assert wait_until(lambda: len(output_of(tmp_path, project_id, deploy_id)) == 400)
        fleet.write(project_id, ["after"])
        fleet.publish()
        assert wait_until(lambda: output_of(tmp_path, project_id, deploy_id)[-1:] == ["after"])
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        code, stderr = finish(process)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    closed = [json.loads(line) for line in stderr.splitlines() if '"stdout_closed"' in line]
    assert [event["level"] for event in closed] == ["error"]
    assert output_of(tmp_path, project_id, deploy_id) == fleet.published(project_id, deploy_id)


def test_run_whose_only_output_is_a_closed_stdout_exits_74(tmp_path, fleet):
    project_id = PROJECTS[0]
    fleet.write(project_id, [stamp(n) for n in range(5)])
    fleet.publish()
    path = config(
        tmp_path, fleet, follows=[project_id], discovery=False, stdout=True, directory=None
    )
    process = closing_stdout(path, fleet, project_id)
    code, stderr = finish(process)
    assert code == 74, stderr
    assert "Traceback" not in stderr
    assert "qc-tail: error: stdout was closed" in stderr


def test_a_second_instance_on_the_same_state_exits_with_a_clear_message(tmp_path, fleet):
    path = config(tmp_path, fleet)
    first = daemon(path, fleet)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "state" / "lock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        second = run(fleet, "--config", str(path), "run")
        assert second.returncode == 75
        assert f"another qc-tail (pid {first.pid})" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        assert finish(first)[0] == 0


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
def test_lines_read_then_trimmed_are_not_repeated(tmp_path, fleet):
    project_id = PROJECTS[0]
    deploy_id = fleet.deploy_ids(project_id)[-1]
    fleet.write(project_id, [stamp(n) for n in range(500)])
    fleet.publish()
    path = config(tmp_path, fleet, follows=[project_id], discovery=False)
    assert run(fleet, "--config", str(path), "run", "--once").returncode == 0
    fleet.trim(project_id, 400)
    fleet.write(project_id, [stamp(n) for n in range(500, 650)])
    fleet.publish()
    result = run(fleet, "--config", str(path), "run", "--once")
    assert result.returncode == 0, result.stderr
    assert output_of(tmp_path, project_id, deploy_id) == [stamp(n) for n in range(650)]
    assert '"event": "gap"' not in result.stderr


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
def test_lines_trimmed_before_being_read_are_reported_as_a_gap(tmp_path, fleet):
    project_id = PROJECTS[0]
    deploy_id = fleet.deploy_ids(project_id)[-1]
    fleet.write(project_id, [stamp(n) for n in range(100)])
    fleet.publish()
    path = config(tmp_path, fleet, follows=[project_id], discovery=False)
    assert run(fleet, "--config", str(path), "run", "--once").returncode == 0
    fleet.write(project_id, [stamp(n) for n in range(100, 1000)])
    fleet.publish()
    fleet.trim(project_id, 600)
    result = run(fleet, "--config", str(path), "run", "--once")
    assert result.returncode == 0, result.stderr
    written = output_of(tmp_path, project_id, deploy_id)
    assert written == [stamp(n) for n in range(100)] + [stamp(n) for n in range(600, 1000)]
    gaps = [json.loads(line) for line in result.stderr.splitlines() if '"gap"' in line]
    assert len(gaps) == 1
    assert gaps[0]["level"] == "warning"
    assert gaps[0]["deploy"] == deploy_id


def test_sighup_reopens_files_for_logrotate(tmp_path, fleet):
    project_id = PROJECTS[0]
    deploy_id = fleet.deploy_ids(project_id)[-1]
    path = config(tmp_path, fleet, follows=[project_id], discovery=False)
    log = tmp_path / "out" / str(project_id) / f"{deploy_id}.log"
    process = daemon(path, fleet)
    written = 0
    rotated = []
    try:
        for round_ in range(3):
            for _ in range(20):
                fleet.write(project_id, [stamp(written + i) for i in range(50)])
                fleet.publish()
                written += 50
                time.sleep(0.02)
            deadline = time.monotonic() + 10
            while not log.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            moved = log.with_name(f"{log.name}.{round_}")
            os.rename(log, moved)  # logrotate "create": rename, new empty file, then HUP
            log.touch(mode=0o640)
            process.send_signal(signal.SIGHUP)
            rotated.append(moved)
        deadline = time.monotonic() + 10
        while len(combined(rotated, log)) < written and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        code, stderr = finish(process)
    assert code == 0, stderr
    assert all(part.read_text() for part in rotated), "every rotated file got lines"
    expected = [stamp(n) for n in range(written)]
    assert combined(rotated, log) == fleet.published(project_id, deploy_id) == expected


def combined(parts: list[Path], log: Path) -> list[str]:
    return [line for part in [*parts, log] for line in part.read_text().splitlines()]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs for the output directory (needs root and mount)."""
    with tmpfs(tmp_path / "disk", "256k") as mountpoint:
        yield mountpoint


def test_a_full_disk_holds_the_cursor_and_recovers_exactly(tmp_path, fleet, small_disk):
    project_id = PROJECTS[0]
    deploy_id = fleet.deploy_ids(project_id)[-1]
    lines = [f"{stamp(n)} {'x' * 60}" for n in range(12_000)]  # ~1 MB: four times the disk
    fleet.write(project_id, lines)
    fleet.publish()
    out = small_disk / "out"
    path = config(tmp_path, fleet, follows=[project_id], discovery=False, directory=out)
    log = out / str(project_id) / f"{deploy_id}.log"
    process = daemon(path, fleet)
    try:
        deadline = time.monotonic() + 15
        while not cursor_exists(tmp_path, project_id, deploy_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)  # the disk is full by now, and stays so while the daemon retries
        cursor = cursor_of(tmp_path, project_id, deploy_id)
        written = log.read_text().splitlines()
        assert written == lines[: len(written)]
        assert cursor["position"] == len(written) < len(lines)
        assert cursor["marks"]["file"]["size"] == log.stat().st_size
        remount = ["mount", "-o", "remount,size=4m", str(small_disk)]
        subprocess.run(remount, check=True)
        deadline = time.monotonic() + 20
        while len(log.read_text().splitlines()) < len(lines) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        code, stderr = finish(process)
    assert code == 0, stderr
    assert log.read_text().splitlines() == lines
    failing = [line for line in stderr.splitlines() if '"poll_failing"' in line]
    assert len(failing) == 1 and "disk is full" in failing[0]
    assert sum('"poll_recovered"' in line for line in stderr.splitlines()) == 1


def cursor_exists(tmp_path: Path, project_id: int, deploy_id: str) -> bool:
    return (tmp_path / "state" / "cursors" / str(project_id) / f"{deploy_id}.json").exists()


def test_discovery_picks_up_new_deployments_and_drops_drained_ones(tmp_path, fleet):
    first = fleet.deploy_ids(PROJECTS[0])[-1]
    fleet.write(PROJECTS[0], ["before"])
    fleet.publish()
    path = config(tmp_path, fleet, start="deployment")
    process = daemon(path, fleet)
    try:
        deadline = time.monotonic() + 15
        while output_of(tmp_path, PROJECTS[0], first) != ["before"] and time.monotonic() < deadline:
            time.sleep(0.05)
        fleet.add_project(404, "newcomer")
        newcomer = fleet.deploy(404)
        fleet.write(404, ["hello from a new deployment"])
        fleet.publish()
        second = fleet.deploy(PROJECTS[0])  # a redeploy while running
        fleet.write(PROJECTS[0], ["after the redeploy"])
        fleet.publish()
        fleet.stop_deployment(PROJECTS[1])  # stops: drained (drain = 1 s), then dropped
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
            (tmp_path / "out" / "404" / f"{newcomer}.log").exists()
            and output_of(tmp_path, PROJECTS[0], second) == ["after the redeploy"]
        ):
            time.sleep(0.05)
        time.sleep(3)
    finally:
        process.send_signal(signal.SIGTERM)
        code, stderr = finish(process)
    assert code == 0, stderr
    assert (tmp_path / "out" / "404" / f"{newcomer}.log").read_text() == (
        "hello from a new deployment\n"
    )
    assert output_of(tmp_path, PROJECTS[0], second) == ["after the redeploy"]
    assert output_of(tmp_path, PROJECTS[0], first) == ["before"]
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    dropped = [e["project"] for e in events if e["event"] == "stopped_following"]
    assert dropped == [PROJECTS[1]]
    assert [e["project"] for e in events if e["event"] == "discovered"] == [*PROJECTS, 404]


def test_stdout_of_a_single_follow_prefixes_lines_once_a_second_deployment_shows(tmp_path, emu):
    """One follow entry: plain lines, as `tail` prints them, until the project's second
    deployment appears in the run; from then on each line says whose it is (SPEC §4)."""
    old = emu.deploy(PROJECT)
    emu.write(PROJECT, ["a1"])
    emu.publish()
    path = config(tmp_path, emu, follows=(PROJECT,), discovery=False)
    path.write_text(path.read_text().replace("[output]\n", "[output]\nstdout = true\n"))
    first = run(emu, "--config", str(path), "run", "--once")
    new = emu.deploy(PROJECT)
    emu.write(PROJECT, ["a2 late"], deploy_id=old)
    emu.write(PROJECT, ["b1"], deploy_id=new)
    emu.publish()
    second = run(emu, "--config", str(path), "run", "--once")
    assert first.returncode == second.returncode == 0, second.stderr
    assert first.stdout == "a1\n"
    assert second.stdout == f"a2 late\n[mean-reversion {new[:10]}] b1\n"


def stopped_while_down(tmp_path: Path, emu: Emulator) -> tuple[Path, str, list[str]]:
    """Discovery alone: a run reads 101 lines of the Running deployment; while qc-tail is
    down, the algorithm logs 500 more, the last a Runtime Error, and stops so."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(n) for n in range(101)])
    path = config(tmp_path, emu, start="deployment")
    first = run(emu, "--config", str(path), "run", "--once")
    assert first.returncode == 0, first.stderr
    assert len(output_of(tmp_path, PROJECT, deploy_id)) == 101
    emu.write(PROJECT, [stamp(n) for n in range(101, 600)])
    emu.write(PROJECT, ["2026-03-01 00:10:00 Runtime Error: division by zero"])
    emu.stop_deployment(PROJECT, "RuntimeError")
    return path, deploy_id, emu.published(PROJECT, deploy_id)


def test_run_once_drains_a_deployment_that_stopped_while_down(tmp_path, emu):
    """Discovery lists Running deployments only: the stopped one has a saved, unfinished
    cursor, and its last lines (those before a crash, most needed) must still be read."""
    path, deploy_id, expected = stopped_while_down(tmp_path, emu)
    result = run(emu, "--config", str(path), "run", "--once")
    assert result.returncode == 0, result.stderr
    assert output_of(tmp_path, PROJECT, deploy_id) == expected
    assert len(expected) == 601


def test_run_drains_a_deployment_that_stopped_while_down_then_drops_it(tmp_path, emu):
    path, deploy_id, expected = stopped_while_down(tmp_path, emu)
    process = daemon(path, emu)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
            output_of(tmp_path, PROJECT, deploy_id) == expected
            and cursor_of(tmp_path, PROJECT, deploy_id)["done"]
        ):
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        code, stderr = finish(process)
    assert code == 0, stderr
    assert output_of(tmp_path, PROJECT, deploy_id) == expected
    assert cursor_of(tmp_path, PROJECT, deploy_id)["done"] is True
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert [e["project"] for e in events if e["event"] == "stopped_following"] == [PROJECT]


def test_a_discovered_projects_start_is_saved_before_another_projects_catch_up(tmp_path, emu):
    """Discovery with ``start = "deployment"``: a daemon busy with a large catch-up is
    killed before it would have polled a small project, which is then redeployed. The small
    project's first deployment was being followed from the moment it was discovered: after
    the restart, its lines are read, not skipped for the then-current deployment."""
    big, small = PROJECT, PROJECT + 1
    emu.add_project(small, "small")
    busy = emu.deploy(big)
    emu.write(big, [stamp(n) for n in range(60_000)])
    first = emu.deploy(small)
    emu.write(small, ["small 0", "small 1"])
    path = config(tmp_path, emu, start="deployment")
    process = daemon(path, emu)
    deadline = time.monotonic() + 20
    while not output_of(tmp_path, big, busy) and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    finish(process)
    assert 0 < len(output_of(tmp_path, big, busy)) < 60_000, "killed mid catch-up"
    second = emu.deploy(small)
    emu.write(small, ["small 2"])
    result = run(emu, "--config", str(path), "run", "--once")
    assert result.returncode == 0, result.stderr
    assert output_of(tmp_path, small, first) == ["small 0", "small 1"]
    assert output_of(tmp_path, small, second) == ["small 2"]
    assert output_of(tmp_path, big, busy) == emu.published(big, busy)


def test_more_deployments_than_open_files_allowed_all_get_their_lines(tmp_path, emu):
    """300 deployments under ``ulimit -n 256``: a descriptor for each would run out, and
    every file past the limit would wait forever. Idle files are closed and reopened."""
    projects = range(1000, 1300)
    for project_id in projects:
        emu.add_project(project_id, f"algo-{project_id}")
        emu.deploy(project_id)
        emu.write(project_id, [f"{project_id} first", f"{project_id} second"])
    emu.publish()
    path = config(tmp_path, emu, start="deployment")
    command = ["sh", "-c", 'ulimit -n 256 && exec "$@"', "sh", *qc_tail("--config", str(path))]
    result = subprocess.run(
        [*command, "run", "--once"],
        env=cli_env(emu),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert secrets_in(result.stderr) == []
    assert result.returncode == 0, result.stderr[-3000:]
    for project_id in projects:
        deploy_id = emu.deploy_ids(project_id)[-1]
        expected = [f"{project_id} first", f"{project_id} second"]
        assert output_of(tmp_path, project_id, deploy_id) == expected, project_id


def test_a_stale_answer_mid_run_neither_gaps_nor_repeats(tmp_path, fleet):
    """The daemon follows a deployment of 1,001 lines (after an older one's 10) when one
    answer comes from a replica 20 rows behind. Taken for a trim, it was a gap and the
    deployment's 1,001 lines written again; waited out, each line is in the file once."""
    project_id = PROJECTS[0]
    fleet.write(project_id, [stamp(n) for n in range(10)])
    current = fleet.deploy(project_id)
    fleet.write(project_id, [stamp(n) for n in range(100, 1101)])
    fleet.publish()
    path = config(tmp_path, fleet, follows=[project_id], discovery=False)
    process = daemon(path, fleet)
    try:
        deadline = time.monotonic() + 30
        while len(output_of(tmp_path, project_id, current)) < 1001:
            assert time.monotonic() < deadline, "the daemon never caught up"
            time.sleep(0.05)
        fleet.lag(project_id, lines=20)
        while fleet.lags.pending and time.monotonic() < deadline:
            time.sleep(0.01)  # the next poll's read gets the stale answer
        fleet.write(project_id, [stamp(n) for n in range(2000, 2010)])
        fleet.publish()
        while len(output_of(tmp_path, project_id, current)) < 1011:
            assert time.monotonic() < deadline, "the daemon never read the new lines"
            time.sleep(0.05)
        time.sleep(0.5)  # several more polls: nothing may come twice
    finally:
        process.send_signal(signal.SIGTERM)
        code, stderr = finish(process)
    assert code == 0, stderr
    assert fleet.lags.pending == 0
    expected = [stamp(n) for n in range(100, 1101)] + [stamp(n) for n in range(2000, 2010)]
    assert output_of(tmp_path, project_id, current) == expected
    assert '"event": "gap"' not in stderr
    assert '"event": "realigned"' not in stderr

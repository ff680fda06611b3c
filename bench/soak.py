"""Soak: the real ``qc-tail run``, SIGKILLed and restarted again and again for minutes, against
a fleet that keeps writing through random API faults; every line is then checked.

The emulator runs in this process (nothing trimmed: ``max_lines`` is huge), with a writer
thread giving each deployment a few lines a second (Poisson), an occasional burst of hundreds
to thousands, and an occasional redeploy; the emulator publishes a snapshot every second.
Random faults (503, empty 500, reset, truncated JSON, 429, auth, 500, 502) hit ``--fault-rate``
of the requests. ``qc-tail run`` (discovery, ``start = "project"``, ``poll.interval = 1``,
``max_interval = 5``, files in a temp dir) is SIGKILLed every ``--kill-every`` seconds and
restarted at once; if it exits by itself (an auth fault on its very first request is fatal by
design), it is restarted too, and counted. Its RSS (``VmRSS``) is sampled every second.

At the end the writer stops, faults are cleared, the last daemon gets SIGTERM, and
``qc-tail run --once`` catches up. Each deployment's file is compared with what the emulator
published: lines delivered, lost, duplicated, foreign, out of order. RSS growth is a linear
fit of RSS against time within each process lifetime (after its first 5 s), averaged over the
lifetimes, in MB per hour (short lifetimes mostly measure the interpreter's warm-up; the
second-half fit and ``--kill-every 0`` show a leak better). Exits 1 if anything was lost,
duplicated, foreign or out of order, or if ``--once`` failed.

    python bench/soak.py                   # 5 minutes, 20 deployments, kill every 30 s
    python bench/soak.py --quick           # 1 minute, 5 deployments, kill every 15 s
    python bench/soak.py --minutes 60 --kill-every 0    # no kills: one long lifetime for RSS
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from harness import TOKEN, USER_ID, machine, qc_tail

from tailer.emulator import Emulator

FAULTS = ("503", "empty500", "reset", "truncated", "429", "auth", "500", "502")
RSS_WARMUP = 5.0  # seconds of each lifetime left out of the RSS fit
RSS_TARGET = 1.0  # MB per hour
LINES_PER_SECOND = 3.0  # per deployment, on average, besides bursts
BURST_EVERY = 120.0  # seconds between bursts of one deployment, on average
REDEPLOY_EVERY = 300.0  # seconds between redeploys of one project, on average
TICK = 0.1  # seconds between the writer's rounds


class Writer:
    """Lines for every project: a Poisson trickle, rare bursts, rare redeploys."""

    def __init__(self, emu: Emulator, projects: list[int], seed: int) -> None:
        self.emu = emu
        self.projects = projects
        self.rng = random.Random(seed)
        self.count = self.bursts = self.redeploys = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="soak-writer", daemon=True)
        self.error: BaseException | None = None

    def _line(self, project_id: int) -> str:
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        self.count += 1
        filler = "x" * self.rng.randint(0, 60)
        return f"{now} INFO p{project_id} seq {self.count} {filler}"

    def _run(self) -> None:
        try:
            self._write()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _write(self) -> None:
        rng = self.rng
        start = time.monotonic()
        due = {p: start + rng.expovariate(LINES_PER_SECOND) for p in self.projects}
        while not self.stop.wait(TICK):
            now = time.monotonic()
            for project_id in self.projects:
                if rng.random() < TICK / REDEPLOY_EVERY:
                    self.emu.publish(project_id)  # the old deployment's last snapshot
                    self.emu.deploy(project_id)
                    self.redeploys += 1
                n = 0
                while due[project_id] <= now:
                    n += 1
                    due[project_id] += rng.expovariate(LINES_PER_SECOND)
                if rng.random() < TICK / BURST_EVERY:
                    n += rng.randint(200, 3000)
                    self.bursts += 1
                if n:
                    self.emu.write(project_id, [self._line(project_id) for _ in range(n)])

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


@dataclass(slots=True)
class Lifetime:
    """One daemon process: RSS samples ``(seconds since start, MB)``, peak, how it ended."""

    pid: int
    samples: list[tuple[float, float]] = field(default_factory=list)
    peak_mb: float = 0.0
    ended: str = ""

    def slope_mb_per_hour(self, late: bool = False) -> float | None:
        """Least-squares slope of RSS against time after the warm-up (``late``: over the second
        half of the lifetime only); None with fewer than 3 samples."""
        since = RSS_WARMUP
        if late and self.samples:
            since = max(since, self.samples[-1][0] / 2)
        points = [(t, mb) for t, mb in self.samples if t >= since]
        if len(points) < 3:
            return None
        n = len(points)
        mean_t = sum(t for t, _ in points) / n
        mean_mb = sum(mb for _, mb in points) / n
        var = sum((t - mean_t) ** 2 for t, _ in points)
        cov = sum((t - mean_t) * (mb - mean_mb) for t, mb in points)
        return cov / var * 3600 if var else None


def memory_mb(pid: int) -> tuple[float, float] | None:
    """``(VmRSS, VmHWM)`` of ``pid`` in MB, or None if it is gone."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    fields[name] = int(value.split()[0]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    if len(fields) < 2:
        return None  # a zombie has no memory lines
    return fields["VmRSS"], fields["VmHWM"]


def write_config(directory: Path, emu: Emulator) -> Path:
    lines = [
        "[api]",
        f'base_url = "{emu.base_url}"',
        f"user_id = {USER_ID}",
        "timeout = 5",
        "[poll]",
        "interval = 1",
        "max_interval = 5",
        "[state]",
        f'dir = "{directory / "state"}"',
        "[discovery]",
        "enabled = true",
        "interval = 5",
        'start = "project"',
        "[output]",
        f'directory = "{directory / "out"}"',
    ]
    path = directory / "qc-tail.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def environment() -> dict[str, str]:
    """The daemon's environment; glibc's MALLOC_* tunables pass through (allocator runs)."""
    malloc = {name: value for name, value in os.environ.items() if name.startswith("MALLOC_")}
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "QC_API_TOKEN": TOKEN,
        "PYTHONUNBUFFERED": "1",
        **malloc,
    }


class Daemon:
    """``qc-tail run``, restarted at once whenever it is killed or ends; stderr to one file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.command = [qc_tail(), "--config", str(config), "--log-format", "json", "run"]
        self.log = log
        self.lifetimes: list[Lifetime] = []
        self.kills = 0
        self.self_exits: Counter[int] = Counter()
        self._process: subprocess.Popen[bytes] | None = None
        self._started = 0.0

    def start(self) -> None:
        with self.log.open("ab") as stderr:
            self._process = subprocess.Popen(
                self.command,
                env=environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self._started = time.monotonic()
        self.lifetimes.append(Lifetime(self._process.pid))

    @property
    def age(self) -> float:
        return time.monotonic() - self._started

    def sample(self) -> None:
        """One RSS sample; a daemon that ended by itself is counted and restarted."""
        assert self._process is not None
        lifetime = self.lifetimes[-1]
        memory = memory_mb(self._process.pid) if self._process.poll() is None else None
        if memory is not None:
            rss, hwm = memory
            lifetime.samples.append((self.age, rss))
            lifetime.peak_mb = max(lifetime.peak_mb, hwm)
        code = self._process.poll()
        if code is not None:
            lifetime.ended = f"exit {code}"
            self.self_exits[code] += 1
            self.start()

    def kill(self) -> None:
        """SIGKILL, reap, and start a new one at once."""
        assert self._process is not None
        self._peak_before_end()
        self._process.send_signal(signal.SIGKILL)
        code = self._process.wait()
        self.lifetimes[-1].ended = "SIGKILL" if code == -signal.SIGKILL else f"exit {code}"
        self.kills += 1
        self.start()

    def terminate(self) -> int:
        """SIGTERM (the graceful stop): its exit code, or -9 if it overran 10 s."""
        assert self._process is not None
        self._peak_before_end()
        self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self.lifetimes[-1].ended = f"SIGTERM, exit {code}"
        return code

    def _peak_before_end(self) -> None:
        assert self._process is not None
        memory = memory_mb(self._process.pid)
        if memory is not None:
            self.lifetimes[-1].peak_mb = max(self.lifetimes[-1].peak_mb, memory[1])


@dataclass(slots=True)
class Check:
    """Published lines against written lines, summed over every deployment."""

    deployments: int = 0
    published: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    foreign: int = 0
    out_of_order: int = 0
    wrong: list[str] = field(default_factory=list)

    def add(self, label: str, expected: list[str], written: list[str]) -> None:
        self.deployments += 1
        self.published += len(expected)
        if written == expected:
            self.delivered += len(expected)
            return
        want, got = Counter(expected), Counter(written)
        lost = sum((want - got).values())
        duplicated = sum(max(0, got[line] - n) for line, n in want.items())
        foreign = sum(n for line, n in got.items() if line not in want)
        self.delivered += len(expected) - lost
        self.lost += lost
        self.duplicated += duplicated
        self.foreign += foreign
        self.out_of_order += out_of_order(expected, written)
        self.wrong.append(
            f"{label}: published {len(expected)}, written {len(written)}, lost {lost}, "
            f"duplicated {duplicated}, foreign {foreign}"
        )

    @property
    def exact(self) -> bool:
        return not (self.lost or self.duplicated or self.foreign or self.out_of_order)


def out_of_order(expected: list[str], written: list[str]) -> int:
    """Lines of ``written`` (first occurrences of published lines) off the longest run that
    keeps the published order: 0 when the order is right, whatever is missing."""
    index = {line: i for i, line in enumerate(expected)}
    seen: set[str] = set()
    order = []
    for line in written:
        if line in index and line not in seen:
            seen.add(line)
            order.append(index[line])
    tails: list[int] = []  # longest increasing subsequence, patience style
    for i in order:
        at = bisect.bisect_left(tails, i)
        tails[at : at + 1] = [i]
    return len(order) - len(tails)


def check_outputs(out: Path, emu: Emulator) -> Check:
    check = Check()
    for project_id in emu.project_ids:
        for deploy_id in emu.deploy_ids(project_id):
            path = out / str(project_id) / f"{deploy_id}.log"
            written = path.read_text().splitlines() if path.exists() else []
            label = f"{project_id}/{deploy_id}"
            check.add(label, emu.published(project_id, deploy_id), written)
    return check


def was_trimmed(emu: Emulator, project_id: int) -> bool:
    """Whether retention removed any of the project's lines (``max_lines`` too small)."""
    ever = sum(len(emu.published(project_id, d)) for d in emu.deploy_ids(project_id))
    return emu.length(project_id) < ever


def events(log: Path, name: str) -> int:
    needle = f'"event": "{name}"'
    with log.open(errors="replace") as lines:
        return sum(needle in line for line in lines)


def soak(args: argparse.Namespace, directory: Path) -> bool:
    projects = list(range(1, args.deployments + 1))
    with Emulator(
        user_id=USER_ID, api_token=TOKEN, publish_interval=1.0, max_lines=10**8, seed=args.seed
    ).start() as emu:
        for project_id in projects:
            emu.add_project(project_id, f"soak-{project_id}")
            emu.deploy(project_id)
        config = write_config(directory, emu)
        log = directory / "qc-tail.stderr"
        daemon = Daemon(config, log)
        emu.faults.random(rate=args.fault_rate, kinds=FAULTS, seed=args.seed)
        began = time.monotonic()
        deadline = began + args.minutes * 60
        with Writer(emu, projects, seed=args.seed) as writer:
            daemon.start()
            tick = report = time.monotonic()
            while time.monotonic() < deadline and writer.error is None:
                tick += 1.0
                time.sleep(max(0.0, tick - time.monotonic()))
                daemon.sample()
                if args.kill_every > 0 and daemon.age >= args.kill_every:
                    daemon.kill()
                if time.monotonic() >= report + 60:
                    report += 60
                    print(
                        f"  {(report - began) / 60:.0f} min: {writer.count} lines written, "
                        f"{daemon.kills} kills, {emu.stats.faults_injected} faults",
                        flush=True,
                    )
        if writer.error is not None:
            raise RuntimeError("the writer failed") from writer.error
        soaked = time.monotonic() - began
        emu.publish()
        faults = emu.stats.faults_injected
        requests = emu.stats.requests
        emu.faults.clear()
        term_code = daemon.terminate()
        once_started = time.monotonic()
        with log.open("ab") as stderr:
            once = subprocess.run(
                [*daemon.command, "--once"],
                env=environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                timeout=600,
                check=False,
            )
        once_seconds = time.monotonic() - once_started
        check = check_outputs(directory / "out", emu)
        trimmed = any(was_trimmed(emu, project_id) for project_id in projects)
        oversized = emu.stats.oversized_windows

    slopes = [s for s in (life.slope_mb_per_hour() for life in daemon.lifetimes) if s is not None]
    growth = sum(slopes) / len(slopes) if slopes else float("nan")
    halves = [life.slope_mb_per_hour(late=True) for life in daemon.lifetimes]
    late = [s for s in halves if s is not None]
    late_growth = sum(late) / len(late) if late else float("nan")
    peak = max((life.peak_mb for life in daemon.lifetimes), default=0.0)
    exits = ", ".join(f"{code}: {n}" for code, n in sorted(daemon.self_exits.items())) or "none"
    rows = [
        ("soaked", f"{soaked / 60:.1f} min"),
        (
            "deployments (projects, redeploys)",
            f"{check.deployments} ({len(projects)}, {writer.redeploys})",
        ),
        ("lines written (bursts)", f"{writer.count} ({writer.bursts})"),
        ("lines published", f"{check.published}"),
        ("lines delivered", f"{check.delivered}"),
        ("lost", f"{check.lost}"),
        ("duplicated", f"{check.duplicated}"),
        ("foreign (never published)", f"{check.foreign}"),
        ("out of order", f"{check.out_of_order}"),
        ("kills (SIGKILL)", f"{daemon.kills}"),
        ("exits by itself (code: n)", exits),
        ("faults injected / requests", f"{faults} / {requests}"),
        ("gap events (expect 0)", f"{events(log, 'gap')}"),
        ("final SIGTERM exit code", f"{term_code}"),
        ("run --once exit code, seconds", f"{once.returncode}, {once_seconds:.1f}"),
        ("RSS growth, mean of lifetimes", f"{growth:+.2f} MB/h (target < {RSS_TARGET:g})"),
        (
            "RSS growth, min / max lifetime",
            f"{min(slopes, default=0):+.1f} / "
            f"{max(slopes, default=0):+.1f} MB/h over {len(slopes)} lifetimes",
        ),
        ("RSS growth, 2nd half of lifetimes", f"{late_growth:+.2f} MB/h"),
        ("peak RSS (VmHWM)", f"{peak:.1f} MB"),
    ]
    width = max(len(name) for name, _ in rows)
    print(
        f"\nsoak: {args.minutes:g} min, {args.deployments} deployments, kill every "
        f"{args.kill_every:g} s, fault rate {args.fault_rate:g}, seed {args.seed}"
    )
    print(machine())
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for line in check.wrong[:10]:
        print(f"  WRONG {line}")
    ok = check.exact and once.returncode == 0 and not trimmed and oversized == 0
    if trimmed:
        print("  the emulator trimmed lines: raise max_lines")
    if oversized:
        print(f"  {oversized} oversized windows asked for")
    print("PASS" if ok else f"FAIL (outputs and logs kept in {directory})")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--deployments", type=int, default=20)
    parser.add_argument("--kill-every", type=float, default=30.0, help="seconds; 0: never")
    parser.add_argument("--fault-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 min, 5 deployments, kill/15 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes, args.deployments, args.kill_every = 1.0, 5, 15.0
    directory = Path(tempfile.mkdtemp(prefix="qc-tail-soak-"))
    ok = False
    try:
        ok = soak(args, directory)
    finally:
        if ok:
            shutil.rmtree(directory, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

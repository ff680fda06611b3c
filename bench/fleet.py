"""Fleet cost: ``qc-tail run`` following 500 idle deployments, polled every 30 s.

The emulator (its own process) serves projects 1..500, each with a Running deployment and no
lines. ``qc-tail run`` discovers them and polls each with ``poll.interval = poll.max_interval
= 30``: the least it can do is one ``/live/logs/read`` per deployment per 30 s, 120 per
deployment-hour. After a warm-up (the start-up burst: discovery and the first poll of every
deployment), the measured window runs from the end of one round of polls to the end of
another, about ``--duration`` seconds later, so that it holds whole rounds. Measured: CPU
time of the qc-tail process (``/proc/<pid>/stat``), its peak RSS (``VmHWM``), and the
emulator's request counts (asked by SIGUSR1).

    python bench/fleet.py             # 500 deployments, 180 s measured
    python bench/fleet.py --quick     # 40 s measured
    python bench/fleet.py --scale     # 2,000 deployments idle, then 10 % active (scale.py)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import scale
from harness import USER_ID, EmulatorProcess, machine, qc_tail

CPU_TARGET = 2.0  # % of one core
REQUESTS_TOLERANCE = 0.01
SAMPLE = 0.5  # seconds between looks at the emulator's counters


@dataclass(frozen=True, slots=True)
class Mark:
    """The state of both processes at one moment."""

    at: float  # seconds since qc-tail was started
    cpu: float  # CPU seconds of the qc-tail process so far
    requests: int  # every request the emulator has answered
    logs_read: int  # /live/logs/read requests among them


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    """VmHWM (peak RSS) and VmRSS of a process, in MB."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                found[name] = int(value.split()[0]) / 1024
    return found


def write_config(directory: Path, emu: EmulatorProcess, interval: float) -> Path:
    path = directory / "qc-tail.toml"
    path.write_text(
        f"[api]\nbase_url = {json.dumps(emu.base_url)}\nuser_id = {USER_ID}\n"
        f"[poll]\ninterval = {interval}\nmax_interval = {interval}\n"
        f'[state]\ndir = "{directory / "state"}"\n'
        "[discovery]\nenabled = true\n"
        f'[output]\ndirectory = "{directory / "out"}"\n'
    )
    return path


class Watch:
    """Samples both processes every ``SAMPLE`` seconds; finds where rounds of polls end."""

    def __init__(self, emu: EmulatorProcess, pid: int, started: float) -> None:
        self.emu, self.pid, self.started = emu, pid, started
        self.marks: list[Mark] = []

    def mark(self) -> Mark:
        stats = self.emu.stats()
        at = time.monotonic() - self.started
        found = Mark(at, cpu_seconds(self.pid), stats["requests"], stats["logs_read"])
        self.marks.append(found)
        return found

    def sleep_until(self, at: float) -> Mark:
        """Sample until ``at`` seconds after the start; the last sample."""
        while (left := self.started + at - time.monotonic()) > 0:
            time.sleep(min(left, SAMPLE))
            self.mark()
        recent = self.marks and self.marks[-1].at >= at - SAMPLE
        return self.marks[-1] if recent else self.mark()

    def round_end(self, start: float, end: float) -> Mark | None:
        """The first sample in ``[start, end]`` with no new poll, right after one with some:
        the end of a round, if polls come in rounds (all deployments in step)."""
        window = [m for m in self.marks if start <= m.at <= end]
        for before, previous, current in zip(window, window[1:], window[2:], strict=False):
            if previous.logs_read > before.logs_read and current.logs_read == previous.logs_read:
                return current
        return None

    def until_round_end(self, at: float, give_up: float) -> Mark:
        """Sample from ``at`` until a round ends (or until ``give_up``)."""
        self.sleep_until(at)
        while (found := self.round_end(at, give_up)) is None:
            if self.marks[-1].at >= give_up:
                return self.marks[-1]
            time.sleep(SAMPLE)
            self.mark()
        return found

    def rounds(self, start: float, end: float) -> list[tuple[float, int]]:
        """(start time, requests) of each burst of polls in ``[start, end]``."""
        found: list[tuple[float, int]] = []
        window = [m for m in self.marks if start <= m.at <= end]
        quiet = True
        for previous, current in itertools.pairwise(window):
            new = current.logs_read - previous.logs_read
            if new and quiet:
                found.append((previous.at, 0))
            if new:
                found[-1] = (found[-1][0], found[-1][1] + new)
            quiet = not new
        return found

    def spread(self, start: float, end: float, step: float) -> list[int]:
        """Polls in each ``step`` seconds of ``[start, end]`` (by the nearest samples)."""
        counts = []
        at = start
        while at + step <= end + SAMPLE / 2:
            a = min(self.marks, key=lambda m: abs(m.at - at))
            b = min(self.marks, key=lambda m: abs(m.at - at - step))
            counts.append(b.logs_read - a.logs_read)
            at += step
        return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="measure 40 s instead of 180 s")
    parser.add_argument("--duration", type=float, help="seconds to measure (default 180)")
    parser.add_argument("--warmup", type=float, default=35.0, help="seconds (default 35)")
    parser.add_argument("--projects", type=int, default=500)
    parser.add_argument("--interval", type=float, default=30.0, help="poll.interval, seconds")
    parser.add_argument("--scale", action="store_true", help="2,000 deployments: scale.py")
    scale.arguments(parser)
    args = parser.parse_args()
    if args.scale:
        if args.projects == 500:
            args.projects = 2000
        scale.main(args)
        return
    duration = args.duration or (40.0 if args.quick else 180.0)
    interval = args.interval

    print("# qc-tail fleet benchmark\n")
    print(machine())
    print(
        f"{args.projects} deployments (no lines), poll.interval = poll.max_interval = "
        f"{interval:g} s, discovery on; warm-up {args.warmup:g} s, then ~{duration:g} s"
    )
    t = time.monotonic()
    with EmulatorProcess(projects=args.projects, preload=0) as emu:
        print(f"emulator up in {time.monotonic() - t:.1f} s (pid {emu.pid})")
        with tempfile.TemporaryDirectory(prefix="qc-fleet-") as tmp:
            directory = Path(tmp)
            config = write_config(directory, emu, interval)
            before = emu.stats()
            stderr = (directory / "stderr.log").open("wb")
            started = time.monotonic()
            process = subprocess.Popen(
                [qc_tail(), "--config", str(config), "run"],
                env=emu.env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            try:
                watch = Watch(emu, process.pid, started)
                begin = watch.sleep_until(args.warmup)
                # In rounds (every deployment in step), the window runs from the end of a
                # round to the end of another, to hold whole rounds; spread evenly, polls
                # need no alignment: the window is [warm-up, warm-up + duration].
                watch.sleep_until(args.warmup + interval)
                first = watch.round_end(args.warmup, args.warmup + interval) or begin
                if first is begin:
                    last = watch.sleep_until(first.at + duration)
                else:
                    at = first.at + duration - interval / 2
                    last = watch.until_round_end(at, give_up=at + interval + 5)
                memory = memory_mb(process.pid)
                alive = process.poll() is None
            finally:
                stopped = time.monotonic()
                process.send_signal(signal.SIGTERM)
                try:
                    code: int | str = process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    code = f"killed after 10 s ({process.wait()})"
                stop_seconds = time.monotonic() - stopped
                stderr.close()
            errors = [
                line
                for line in (directory / "stderr.log").read_text().splitlines()
                if '"level": "error"' in line or '"level": "warning"' in line
            ]
    if not alive:
        raise SystemExit(f"qc-tail exited early with {code}; stderr:\n" + "\n".join(errors))
    startup_requests = first.requests - before["requests"]
    report(args, watch, first, last, memory, startup_requests, interval, first is not begin)
    print(f"shutdown: SIGTERM -> exit {code} in {stop_seconds:.2f} s")
    if errors:
        print(f"{len(errors)} warning/error log lines, first: {errors[0][:300]}")


def report(
    args: argparse.Namespace,
    watch: Watch,
    first: Mark,
    last: Mark,
    memory: dict[str, float],
    startup_requests: int,
    interval: float,
    aligned: bool,
) -> None:
    seconds = last.at - first.at
    cpu = last.cpu - first.cpu
    logs_read = last.logs_read - first.logs_read
    requests = last.requests - first.requests
    hours = seconds / 3600 * args.projects
    minimum = 3600 / interval
    per_hour = logs_read / hours
    rounds = watch.rounds(first.at, last.at)
    cpu_share = cpu / seconds * 100
    print(
        f"\nbefore the window: {startup_requests} requests (discovery, the first poll of every "
        f"deployment, and the polls until {first.at:.1f} s)\nmeasured window: {first.at:.1f} s "
        f".. {last.at:.1f} s after qc-tail started = {seconds:.1f} s, "
        f"{args.projects * seconds / 3600:.2f} deployment-hours\n"
    )
    rows = [
        ("CPU, % of one core", f"{cpu_share:.2f} %", f"< {CPU_TARGET:g} %", cpu_share < CPU_TARGET),
        ("CPU seconds per hour", f"{cpu / seconds * 3600:.1f} s", "", None),
        ("CPU seconds in the window", f"{cpu:.2f} s", "", None),
        ("peak RSS (VmHWM)", f"{memory.get('VmHWM', 0):.1f} MB", "", None),
        ("RSS at the end (VmRSS)", f"{memory.get('VmRSS', 0):.1f} MB", "", None),
        ("/live/logs/read in the window", f"{logs_read}", "", None),
        ("all requests in the window", f"{requests}", "", None),
        (
            "logs/read per deployment-hour",
            f"{per_hour:.2f}",
            f"{minimum:g} (+{REQUESTS_TOLERANCE:.0%})",
            per_hour <= minimum * (1 + REQUESTS_TOLERANCE),
        ),
        ("ratio to the minimum", f"{per_hour / minimum:.4f}", "", None),
        ("all requests per deployment-hour", f"{requests / hours:.2f}", "", None),
    ]
    print(f"{'figure':<34} {'measured':>12}  {'target':<14} verdict")
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("ok" if ok else "MISSED")
        print(f"{name:<34} {value:>12}  {target:<14} {verdict}")
    if aligned and rounds:
        sizes = " ".join(str(n) for _, n in rounds)
        starts = [at for at, _ in rounds]
        period = (starts[-1] - starts[0]) / (len(starts) - 1) if len(starts) > 1 else 0.0
        print(f"\npolls come in rounds; requests of each round in the window: {sizes}")
        if period:
            print(f"mean period between rounds: {period:.2f} s")
    else:
        step = interval / 6
        counts = watch.spread(first.at, last.at, step)
        print(
            f"\npolls are spread over the interval: per {step:g} s, "
            f"min {min(counts)}, max {max(counts)}, mean {sum(counts) / len(counts):.1f} "
            f"(even: {args.projects / interval * step:.1f})"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""The fleet at scale, for ``fleet.py --scale``: 2,000 deployments idle, then 10 % active.

``qc-tail run`` with the default poll timing (``interval = 30``, ``max_interval = 300``),
discovery on, files out, and ``[metrics] listen`` on loopback. Phase 1 (idle): no
deployment has lines; after a warm-up long enough for every deployment to back off to
``max_interval``, one measured window. Phase 2 (active): the emulator (SIGUSR2) gives each
of projects 1..200 ten new lines every 30 s; after a warm-up (every active deployment has
found its lines and polls at ``interval`` again), another window. In each window: CPU % of
one core, RSS, requests per deployment-hour against the minimum (one ``/live/logs/read`` per
deployment per its poll period), and the time to scrape ``/metrics``.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fleet import cpu_seconds, memory_mb
from harness import USER_ID, EmulatorProcess, machine, qc_tail

CPU_TARGET = 3.0  # % of one core, idle
RSS_TARGET = 150.0  # MB
SCRAPE_TARGET = 50.0  # ms
SCRAPES = 20


@dataclass(frozen=True, slots=True)
class Point:
    at: float
    cpu: float
    requests: int
    logs_read: int


def point(emu: EmulatorProcess, pid: int, started: float) -> Point:
    stats = emu.stats()
    return Point(
        time.monotonic() - started, cpu_seconds(pid), stats["requests"], stats["logs_read"]
    )


def metrics_port(stderr: Path, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in stderr.read_text().splitlines():
            if '"metrics_listening"' in line:
                return int(json.loads(line)["port"])
        time.sleep(0.2)
    raise SystemExit("qc-tail never said where its metrics listen")


def scrape(port: int) -> dict[str, float]:
    """Scrape /metrics ``SCRAPES`` times: median and max milliseconds, bytes, samples."""
    times, size = [], 0
    for _ in range(SCRAPES):
        start = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            body = answer.read()
        times.append((time.perf_counter() - start) * 1000)
        size = len(body)
    samples = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    return {
        "median": statistics.median(times),
        "max": max(times),
        "bytes": size,
        "samples": samples,
    }


def config(directory: Path, emu: EmulatorProcess, interval: float, max_interval: float) -> Path:
    path = directory / "qc-tail.toml"
    path.write_text(
        f"[api]\nbase_url = {json.dumps(emu.base_url)}\nuser_id = {USER_ID}\n"
        f"[poll]\ninterval = {interval}\nmax_interval = {max_interval}\n"
        f'[state]\ndir = "{directory / "state"}"\n'
        "[discovery]\nenabled = true\n"
        f'[output]\ndirectory = "{directory / "out"}"\n'
        '[metrics]\nlisten = "127.0.0.1:0"\n'
    )
    return path


def window(name: str, a: Point, b: Point, deployments: int, minimum: float) -> list[tuple]:
    seconds = b.at - a.at
    hours = seconds / 3600 * deployments
    cpu = (b.cpu - a.cpu) / seconds * 100
    reads = (b.logs_read - a.logs_read) / hours
    every = (b.requests - a.requests) / hours
    print(
        f"\n{name}: {a.at:.0f} s .. {b.at:.0f} s after start = {seconds:.0f} s, "
        f"{hours:.1f} deployment-hours"
    )
    return [
        ("CPU, % of one core", f"{cpu:.2f} %", f"< {CPU_TARGET:g} %" if name == "idle" else ""),
        ("logs/read per deployment-hour", f"{reads:.2f}", f"min {minimum:.1f}"),
        ("ratio to the minimum", f"{reads / minimum:.3f}", ""),
        ("all requests per deployment-hour", f"{every:.2f}", ""),
    ]


def main(args: argparse.Namespace) -> None:
    n, active = args.projects, args.projects // 10
    interval, max_interval = args.interval, args.max_interval
    print("# qc-tail fleet benchmark at scale\n")
    print(machine())
    print(
        f"{n} deployments, poll.interval {interval:g} s, max_interval {max_interval:g} s, "
        f"discovery on; idle, then {active} active (10 lines every 30 s each)"
    )
    extra = ["--active", str(active), "--active-every", "30", "--active-lines", "10"]
    with (
        EmulatorProcess(projects=n, preload=0, extra=extra) as emu,
        tempfile.TemporaryDirectory(prefix="qc-scale-") as tmp,
    ):
        directory = Path(tmp)
        path = config(directory, emu, interval, max_interval)
        stderr_path = directory / "stderr.log"
        stderr = stderr_path.open("wb")
        started = time.monotonic()
        process = subprocess.Popen(
            [qc_tail(), "--config", str(path), "run"],
            env=emu.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            port = metrics_port(stderr_path)
            time.sleep(max(0.0, started + args.idle_warmup - time.monotonic()))
            a = point(emu, process.pid, started)
            time.sleep(args.window)
            b = point(emu, process.pid, started)
            idle_memory, idle_scrape = memory_mb(process.pid), scrape(port)
            emu.signal(signal.SIGUSR2)
            time.sleep(args.active_warmup)
            c = point(emu, process.pid, started)
            time.sleep(args.window)
            d = point(emu, process.pid, started)
            active_memory, active_scrape = memory_mb(process.pid), scrape(port)
            alive = process.poll() is None
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
            stderr.close()
        lines = stderr_path.read_text().splitlines()
    if not alive:
        raise SystemExit(f"qc-tail exited early with {code}")
    warnings = [
        line for line in lines if '"level": "warning"' in line or '"level": "error"' in line
    ]
    idle_min = 3600 / max_interval
    active_min = (n - active) / n * 3600 / max_interval + active / n * 3600 / interval
    rows = window("idle", a, b, n, idle_min)
    rows += [
        ("peak RSS (VmHWM)", f"{idle_memory['VmHWM']:.1f} MB", f"< {RSS_TARGET:g} MB"),
        (
            "/metrics scrape, median / max",
            f"{idle_scrape['median']:.1f} / {idle_scrape['max']:.1f} ms",
            f"< {SCRAPE_TARGET:g} ms",
        ),
        (
            "/metrics size",
            f"{idle_scrape['bytes']:.0f} B, {idle_scrape['samples']:.0f} samples",
            "",
        ),
    ]
    table(rows)
    rows = window("10 % active", c, d, n, active_min)
    rows += [
        ("peak RSS (VmHWM)", f"{active_memory['VmHWM']:.1f} MB", f"< {RSS_TARGET:g} MB"),
        (
            "/metrics scrape, median / max",
            f"{active_scrape['median']:.1f} / {active_scrape['max']:.1f} ms",
            f"< {SCRAPE_TARGET:g} ms",
        ),
        (
            "/metrics size",
            f"{active_scrape['bytes']:.0f} B, {active_scrape['samples']:.0f} samples",
            "",
        ),
    ]
    table(rows)
    print(f"\nshutdown: SIGTERM -> exit {code}; {len(warnings)} warning/error log lines")
    if warnings:
        print(f"first: {warnings[0][:300]}")


def table(rows: list[tuple]) -> None:
    print(f"{'figure':<34} {'measured':>26}  target")
    for name, value, target in rows:
        print(f"{name:<34} {value:>26}  {target}")


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--idle-warmup", type=float, default=540.0, help="seconds (540)")
    parser.add_argument("--active-warmup", type=float, default=330.0, help="seconds (330)")
    parser.add_argument("--window", type=float, default=300.0, help="seconds measured (300)")
    parser.add_argument("--max-interval", type=float, default=300.0, help="poll.max_interval")

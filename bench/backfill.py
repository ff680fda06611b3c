"""Backfill: a deployment's whole backlog at a real API's latency, through the export endpoint
or in windows, against the seed-style loop (the baseline).

The emulator runs in its own process (``qc-tail emulator --preload N --latency MS``), every
client in another; wall time is the whole client process (start-up included), requests are
counted by the emulator, peak RSS comes from ``wait4``. Each figure is the best of ``--runs``.
Peak RSS is compared with the same client's backfill of 1,000 lines.

    python bench/backfill.py            # 100,000 lines at 100 ms
    python bench/backfill.py --quick    # 10,000 lines: a smoke test
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness import BENCH, EmulatorProcess, Run, machine, measure, qc_tail

PROJECT = 1
SMALL = 1_000
SPEED_TARGET = 20.0  # times the baseline's rate
REQUEST_TARGET = 5
RSS_SPREAD_MB = 10.0


@dataclass(slots=True)
class Client:
    label: str
    kind: str  # baseline | tail | run
    export: str = "auto"
    runs: list[Run] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    exports: list[int] = field(default_factory=list)
    small: list[Run] = field(default_factory=list)


def clients() -> list[Client]:
    return [
        Client("baseline: sequential windows, requests.post", "baseline"),
        Client('qc-tail tail --from-start (export = "auto")', "tail"),
        Client('qc-tail tail --from-start (export = "never")', "tail", export="never"),
        Client('qc-tail run --once -> file (export = "auto")', "run"),
    ]


def command(client: Client, emu: EmulatorProcess, directory: Path) -> list[str]:
    if client.kind == "baseline":
        return [sys.executable, str(BENCH / "baseline.py"), str(PROJECT)]
    text = f'[api]\nbase_url = "{emu.base_url}"\nexport = "{client.export}"\n'
    if client.kind == "run":
        text += f'[state]\ndir = "{directory / "state"}"\n[discovery]\nenabled = false\n'
        text += f'[[follow]]\nproject_id = {PROJECT}\nstart = "deployment"\n'
        text += f'[output]\ndirectory = "{directory / "out"}"\n'
    config = directory / "qc-tail.toml"
    config.write_text(text)
    if client.kind == "run":
        return [qc_tail(), "--config", str(config), "run", "--once"]
    return [qc_tail(), "--config", str(config), "tail", str(PROJECT), "--from-start"]


def once(client: Client, emu: EmulatorProcess, lines: int) -> tuple[Run, int, int]:
    """One run, every line counted; the requests and exports it made."""
    with tempfile.TemporaryDirectory(prefix="qc-backfill-") as tmp:
        directory = Path(tmp)
        before = emu.stats()
        out = directory / "stdout.txt"
        with out.open("wb") as stdout, (directory / "stderr.log").open("wb") as stderr:
            run = measure(command(client, emu, directory), emu.env(), stdout=stdout, stderr=stderr)
        after = emu.stats()
        if run.returncode != 0:
            text = (directory / "stderr.log").read_text()[-2000:]
            raise SystemExit(f"{client.label}: exit code {run.returncode}\n{text}")
        files = list((directory / "out").rglob("*.log")) if client.kind == "run" else [out]
        got = sum(path.read_bytes().count(b"\n") for path in files)
        if got != lines:
            raise SystemExit(f"{client.label}: {got} lines, expected {lines}")
        requests = after["requests"] - before["requests"]
        return run, requests, after["export"] - before["export"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 lines")
    parser.add_argument("--lines", type=int, help="default 100,000")
    parser.add_argument("--latency", type=float, default=100.0, metavar="MS")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    lines = args.lines or (10_000 if args.quick else 100_000)

    print("# qc-tail backfill benchmark\n")
    print(machine())
    print(f"{lines:,} lines of one deployment, emulator latency {args.latency:g} ms\n")
    found = clients()
    with (
        EmulatorProcess(preload=lines, latency_ms=args.latency) as emu,
        EmulatorProcess(preload=SMALL, latency_ms=args.latency) as small,
    ):
        for _ in range(args.runs):
            for client in found:
                run, requests, exports = once(client, emu, lines)
                client.runs.append(run)
                client.requests.append(requests)
                client.exports.append(exports)
                client.small.append(once(client, small, SMALL)[0])
                done = f"{run.wall:.2f} s, {requests} requests"
                print(f"  .. {client.label}: {done}", file=sys.stderr)
    report(found, lines)


def report(found: list[Client], lines: int) -> None:
    baseline = min(run.wall for run in found[0].runs)
    header = (
        f"{'client':<46} {'wall s':>7} {'lines/s':>9} {'x base':>7} {'requests':>8} "
        f"{'exports':>7} {'RSS MB':>7} {f'RSS {SMALL:,}':>10}"
    )
    print(header)
    print("-" * len(header))
    for client in found:
        wall = min(run.wall for run in client.runs)
        rss = max(run.max_rss_mb for run in client.runs)
        little = max(run.max_rss_mb for run in client.small)
        print(
            f"{client.label:<46} {wall:>7.2f} {lines / wall:>9,.0f} {baseline / wall:>6.1f}x "
            f"{max(client.requests):>8} {max(client.exports):>7} {rss:>7.1f} {little:>10.1f}"
        )
    exported = found[1]
    wall = min(run.wall for run in exported.runs)
    rss = max(run.max_rss_mb for run in exported.runs) - max(r.max_rss_mb for r in exported.small)
    verdicts = [
        (f">= {SPEED_TARGET:g}x the baseline", baseline / wall >= SPEED_TARGET),
        (f"<= {REQUEST_TARGET} requests", max(exported.requests) <= REQUEST_TARGET),
        (f"peak RSS within {RSS_SPREAD_MB:g} MB of {SMALL:,} lines", rss <= RSS_SPREAD_MB),
    ]
    print(
        f"\n{exported.label}: {baseline / wall:.1f}x, {max(exported.requests)} requests, "
        f"RSS +{rss:.1f} MB"
    )
    for target, ok in verdicts:
        print(f"  {target}: {'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()

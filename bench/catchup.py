"""Catch-up speed: how fast the real ``qc-tail`` reads a deployment's backlog, against a
naive client (the baseline) and the emulator's own capacity (the limit).

The emulator runs in its own process (``qc-tail emulator --preload N --latency MS``); every
client is a separate process too. Each figure is the best of ``--runs`` (median shown too),
timed as the wall time of the whole client process, interpreter start-up included (except
the limit, timed from its workers' readiness). Peak RSS comes from ``wait4`` of the process.

Every client also reads a small deployment (1,000 lines, a second emulator) in the same
rounds: the **steady rate** ``(N - 1,000) / (wall(N) - wall(1,000))`` is what each extra line
costs once start-up and the first requests are paid for, the figure comparable with the
limit (which excludes start-up too).

    python bench/catchup.py            # 100,000 lines, 0 and 20 ms latency, best of 3
    python bench/catchup.py --quick    # 10,000 lines, 1 run: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from harness import BENCH, USER_ID, EmulatorProcess, Run, machine, measure, median, qc_tail

PROJECT = 1
RSS_TARGET_MB = 80.0
RSS_SPREAD_MB = 10.0
SMALL = 1_000


@dataclass(slots=True)
class Variant:
    """One client to time; ``kind`` says how to run it and how to check what it read."""

    label: str
    kind: str  # baseline | tail | run | limit
    in_flight: int = 4
    processes: int = 4
    runs: list[Run] = field(default_factory=list)
    small: list[Run] = field(default_factory=list)  # the same client on SMALL lines

    @property
    def is_qc_tail(self) -> bool:
        return self.kind in ("tail", "run")


def variants(limits: list[int]) -> list[Variant]:
    found = [
        Variant("baseline: requests.post, no Session, sequential", "baseline"),
        Variant("qc-tail tail --from-start > /dev/null", "tail", in_flight=4),
        Variant("qc-tail tail, max_in_flight = 8", "tail", in_flight=8),
        Variant("qc-tail run --once -> file", "run", in_flight=4),
        Variant("qc-tail run --once -> file, max_in_flight = 8", "run", in_flight=8),
    ]
    found += [
        Variant(f"limit: {n} kept-alive client processes", "limit", processes=n) for n in limits
    ]
    return found


def write_config(directory: Path, emu: EmulatorProcess, in_flight: int, *, run: bool) -> Path:
    """A config for ``qc-tail run`` (outputs, state, one follow) or just [api] for ``tail``."""
    text = f"[api]\nbase_url = {json.dumps(emu.base_url)}\nuser_id = {USER_ID}\n"
    text += f"max_in_flight = {in_flight}\n"
    text += 'export = "never"\n'  # windows: their throughput is measured here (backfill.py: export)
    if run:
        text += f'[state]\ndir = "{directory / "state"}"\n'
        text += "[discovery]\nenabled = false\n"
        text += f'[[follow]]\nproject_id = {PROJECT}\nstart = "deployment"\n'
        text += f'[output]\ndirectory = "{directory / "out"}"\n'
    path = directory / "qc-tail.toml"
    path.write_text(text)
    return path


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def run_once(variant: Variant, emu: EmulatorProcess, lines: int, *, verify: bool) -> Run:
    """One timed run; with ``verify``, output goes to a file and every line is counted."""
    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        directory = Path(tmp)
        env = emu.env()
        stderr_path = directory / "stderr.log"
        out_path = directory / "stdout.txt"
        if variant.kind == "baseline":
            command = [sys.executable, str(BENCH / "baseline.py"), str(PROJECT)]
        elif variant.kind == "tail":
            config = write_config(directory, emu, variant.in_flight, run=False)
            command = [qc_tail(), "--config", str(config), "tail", str(PROJECT), "--from-start"]
        elif variant.kind == "run":
            config = write_config(directory, emu, variant.in_flight, run=True)
            command = [qc_tail(), "--config", str(config), "run", "--once"]
        else:
            command = [sys.executable, str(BENCH / "limit.py"), str(PROJECT)]
            command += ["--processes", str(variant.processes)]
            command += ["--verify"] if verify else []
        to_file = verify or variant.kind == "limit"
        with stderr_path.open("wb") as stderr, out_path.open("wb") as stdout:
            run = measure(
                command, env, stdout=stdout if to_file else subprocess.DEVNULL, stderr=stderr
            )
        if run.returncode != 0:
            raise SystemExit(
                f"{variant.label}: exit code {run.returncode}\n{stderr_path.read_text()[-2000:]}"
            )
        if variant.kind == "limit":
            result = json.loads(out_path.read_text())
            run = Run(result["seconds"], run.cpu, run.max_rss_mb, 0)
            got = result["lines"] if verify else lines
        elif variant.kind == "run":
            files = list((directory / "out").rglob("*.log"))
            got = sum(count_lines(path) for path in files)
        else:
            got = count_lines(out_path) if verify else lines
        if got != lines:
            raise SystemExit(f"{variant.label}: read {got} lines, expected {lines}")
        return run


def best(variant: Variant, lines: int) -> float:
    return lines / min(run.wall for run in variant.runs)


def steady(variant: Variant, lines: int) -> float:
    """Lines per second beyond the first SMALL: start-up and fixed costs cancel out."""
    extra = min(run.wall for run in variant.runs) - min(run.wall for run in variant.small)
    return (lines - SMALL) / extra if extra > 0 else float("inf")


def median_rate(variant: Variant, lines: int) -> float:
    return lines / median([run.wall for run in variant.runs])


def report(found: list[Variant], lines: int, latency: float) -> None:
    baseline = next(v for v in found if v.kind == "baseline")
    limits = [v for v in found if v.kind == "limit"]
    limit = max(limits, key=lambda v: best(v, lines))
    steady_limit = max(limits, key=lambda v: steady(v, lines))
    runs = len(baseline.runs)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n## {lines:,} lines, emulator latency {latency:g} ms (best of {runs}; median)")
    print(f"(load average after the runs: {load})\n")
    header = (
        f"{'client':<50} {'lines/s':>9} {'median':>9} {'wall s':>7} {'CPU s':>6} "
        f"{'RSS MB':>7} {'/baseline':>9} {'/limit':>7} {'steady/s':>9} {'/base':>6} {'/limit':>7}"
    )
    print(header)
    print("-" * len(header))
    for v in found:
        wall = min(run.wall for run in v.runs)
        cpu = min(run.cpu for run in v.runs)
        rss = max(run.max_rss_mb for run in v.runs)
        ratios = steady_ratios = ""
        if v.is_qc_tail:
            ratios = (
                f"{best(v, lines) / best(baseline, lines):>8.2f}x "
                f"{best(v, lines) / best(limit, lines):>6.2f}x"
            )
            steady_ratios = (
                f"{steady(v, lines) / steady(baseline, lines):>5.2f}x "
                f"{steady(v, lines) / steady(steady_limit, lines):>6.2f}x"
            )
        rss_text = f"{rss:7.1f}" if v.kind != "limit" else f"{'-':>7}"
        print(
            f"{v.label:<50} {best(v, lines):>9,.0f} {median_rate(v, lines):>9,.0f} "
            f"{wall:>7.2f} {cpu:>6.2f} {rss_text} {ratios:<17} {steady(v, lines):>9,.0f} "
            f"{steady_ratios}"
        )
    print(f"(/limit: against the best limit, {limit.label}; steady: {steady_limit.label})")


def startup_seconds() -> float:
    """The fixed cost in every qc-tail figure: ``qc-tail --version`` (interpreter, imports)."""
    runs = [measure([qc_tail(), "--version"], {}).wall for _ in range(5)]
    return min(runs)


def rss_check(lines: int, found: list[Variant]) -> None:
    """Peak RSS of the SMALL-line catch-ups against the large ones (in-flight 4, latency 0)."""
    print("\n## Peak RSS of the qc-tail process (max over the runs; ru_maxrss from wait4)\n")
    print(
        f"{'client':<28} {f'{SMALL:,} lines':>12} {f'{lines:,} lines':>14} {'growth':>8}  verdict"
    )
    for v in found:
        if not v.is_qc_tail or v.in_flight != 4:
            continue
        little = max(r.max_rss_mb for r in v.small)
        big = max(r.max_rss_mb for r in v.runs)
        ok = big < RSS_TARGET_MB and big - little <= RSS_SPREAD_MB
        verdict = "ok" if ok else "MISSED"
        print(
            f"{v.label:<28.28} {little:>9.1f} MB {big:>11.1f} MB {big - little:>5.1f} MB  {verdict}"
        )
    print(
        f"(targets: under {RSS_TARGET_MB:g} MB, "
        f"within {RSS_SPREAD_MB:g} MB of the {SMALL:,}-line run)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 lines, 1 run")
    parser.add_argument("--lines", type=int, help="lines of the deployment (default 100,000)")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3)")
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 20.0], metavar="MS")
    parser.add_argument("--limit-processes", type=int, nargs="+", default=[4, 8], metavar="N")
    args = parser.parse_args()
    lines = args.lines or (10_000 if args.quick else 100_000)
    runs = args.runs or (1 if args.quick else 3)

    print("# qc-tail catch-up benchmark\n")
    print(machine())
    print(
        f"{lines:,} lines of one deployment; windows of 249 lines; wall time of the whole "
        "client process, start-up included (the limit excepted); steady = the rate beyond "
        f"the first {SMALL:,} lines (a {SMALL:,}-line deployment timed in the same rounds)"
    )
    print(f"qc-tail start-up alone (qc-tail --version, best of 5): {startup_seconds():.3f} s")

    first: list[Variant] = []
    for latency in args.latency:
        found = variants(args.limit_processes)
        with (
            EmulatorProcess(preload=lines, latency_ms=latency) as emu,
            EmulatorProcess(preload=SMALL, latency_ms=latency) as small,
        ):
            for variant in found:  # a checked warm-up: every line arrives, exactly once
                run_once(variant, emu, lines, verify=True)
                run_once(variant, small, SMALL, verify=True)
            for _ in range(runs):  # interleaved, so that noise spreads over every client
                for variant in found:
                    variant.runs.append(run_once(variant, emu, lines, verify=False))
                    variant.small.append(run_once(variant, small, SMALL, verify=False))
                    progress(variant, lines)
        report(found, lines, latency)
        first = first or found
    rss_check(lines, first)


def progress(variant: Variant, lines: int) -> None:
    """One line per run on stderr, so a long benchmark shows it is alive."""
    run = variant.runs[-1]
    rate = lines / run.wall
    print(f"  .. {variant.label}: {run.wall:.2f} s ({rate:,.0f} lines/s)", file=sys.stderr)


if __name__ == "__main__":
    main()

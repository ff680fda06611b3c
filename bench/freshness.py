"""Freshness: how soon a published line reaches ``qc-tail tail -f``'s stdout, and at what cost.

Each scenario runs two emulators (their own processes) that publish project 1's snapshots on
the same seeded schedule: every ``P`` seconds times ``1 +/- jitter``, each snapshot a line
stamped with the moment it is published (``--publish-stamp``). Against one, ``qc-tail tail 1
-f -n 0`` as it is by default (the snapshot rhythm learned); against the other, the same with
``--interval 30`` (a fixed pace, as before the rhythm). A line's delay is the moment it is
read from the client's stdout minus its stamp. ``/live/logs/read`` per snapshot is counted by
the emulator (asked by SIGUSR1 as each line arrives). The first two snapshots are for
learning and are not counted, in delays or in requests. All scenarios run at once, in real
time.

    python bench/freshness.py                 # P = 60, 120 (+-5 %), irregular 20-180 s: 20 min
    python bench/freshness.py --scenario 300:0.05:2400
    python bench/freshness.py --quick         # P = 8 (+-5 %), poll.interval 4: 90 s smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import EmulatorProcess, machine, qc_tail

LEARNING = 2  # snapshots not counted


@dataclass(frozen=True, slots=True)
class Scenario:
    period: float
    jitter: float
    duration: float

    @property
    def name(self) -> str:
        if self.jitter >= 0.5:
            low, high = self.period * (1 - self.jitter), self.period * (1 + self.jitter)
            return f"irregular {low:g}-{high:g} s"
        return f"P={self.period:g} s +-{self.jitter:.0%}"


@dataclass(slots=True)
class Client:
    """One qc-tail against one emulator: each line's delay, and the reads when it came."""

    label: str
    delays: list[float] = field(default_factory=list)
    reads: list[int] = field(default_factory=list)  # logs_read when each line arrived
    start_reads: int = 0

    def summary(self) -> dict[str, float]:
        counted = self.delays[LEARNING:]
        if len(counted) < 2:
            return {"snapshots": len(self.delays)}
        ordered = sorted(counted)
        p90 = ordered[min(len(ordered) - 1, round(0.9 * len(ordered)) - 1)]
        reads = (self.reads[-1] - self.reads[LEARNING - 1]) / (len(self.delays) - LEARNING)
        return {
            "snapshots": len(self.delays),
            "counted": len(counted),
            "median": statistics.median(counted),
            "p90": p90,
            "max": ordered[-1],
            "reads_per_snapshot": reads,
        }


def follow(
    scenario: Scenario,
    client: Client,
    args: list[str],
    seed: int,
    config: Path | None,
    deadline: float,
) -> None:
    extra = ["--publish-jitter", str(scenario.jitter), "--publish-stamp", "--seed", str(seed)]
    with EmulatorProcess(projects=1, publish_interval=scenario.period, extra=extra) as emu:
        command = [qc_tail(), "--log-level", "warning", "tail", "1", "-f", "-n", "0", *args]
        env = emu.env(QC_TAIL_CONFIG=str(config)) if config else emu.env()
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        assert process.stdout is not None
        timer = threading.Timer(max(0.0, deadline - time.time()), process.terminate)
        timer.start()
        try:
            for line in process.stdout:
                arrived = time.time()
                published = float(line.rsplit(" ", 1)[1])
                client.delays.append(arrived - published)
                client.reads.append(emu.stats()["logs_read"])
        finally:
            timer.cancel()
            process.terminate()
            process.wait()


def run(scenarios: list[Scenario], config: Path | None) -> list[tuple[Scenario, Client, Client]]:
    results = []
    threads = []
    now = time.time()
    for index, scenario in enumerate(scenarios):
        rhythm, fixed = Client("rhythm (default)"), Client("--interval 30")
        fixed_args = ["--interval", "30"] if config is None else ["--interval", "4"]
        if config is not None:
            fixed.label = "--interval 4"
        for client, args in ((rhythm, []), (fixed, fixed_args)):
            thread = threading.Thread(
                target=follow,
                args=(scenario, client, args, 1000 + index, config, now + scenario.duration),
                daemon=True,
            )
            thread.start()
            threads.append(thread)
        results.append((scenario, rhythm, fixed))
    for thread in threads:
        thread.join()
    return results


def report(results: list[tuple[Scenario, Client, Client]]) -> None:
    print(
        "| publishing | client | snapshots (counted) | median s | p90 s | max s | reads/snapshot |"
    )
    print("|---|---|---|---|---|---|---|")
    for scenario, *clients in results:
        for client in clients:
            s = client.summary()
            if "counted" not in s:
                print(
                    f"| {scenario.name} | {client.label} | {s['snapshots']:.0f} | - | - | - | - |"
                )
                continue
            print(
                f"| {scenario.name} | {client.label} | {s['snapshots']:.0f} ({s['counted']:.0f}) "
                f"| {s['median']:.2f} | {s['p90']:.2f} | {s['max']:.2f} "
                f"| {s['reads_per_snapshot']:.2f} |"
            )


def parse_scenario(text: str) -> Scenario:
    period, jitter, duration = (float(part) for part in text.split(":"))
    return Scenario(period, jitter, duration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--scenario",
        action="append",
        type=parse_scenario,
        metavar="P:JITTER:SECONDS",
        help="repeatable; default 60:0.05:1200 120:0.05:1200 100:0.8:1200",
    )
    options = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        config = None
        if options.quick:
            config = Path(tmp) / "qc-tail.toml"
            config.write_text("[poll]\ninterval = 4\nmax_interval = 4\n")
            scenarios = options.scenario or [Scenario(8, 0.05, 90)]
        else:
            scenarios = options.scenario or [
                Scenario(60, 0.05, 1200),
                Scenario(120, 0.05, 1200),
                Scenario(100, 0.8, 1200),
            ]
        print(
            f"scenarios: {', '.join(s.name + f' for {s.duration:g} s' for s in scenarios)}",
            file=sys.stderr,
        )
        results = run(scenarios, config)
    report(results)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

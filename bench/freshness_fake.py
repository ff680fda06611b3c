"""Freshness over hours, on a fake clock that qc-tail and the emulator share.

``freshness.py`` runs the real command in real time, so a run sees a few dozen snapshots.
This one runs many hours of publishing in seconds: qc-tail's own scheduler, follower and
stdout sink (as ``tail 1 -f -n 0`` builds them) in-process, on a clock that moves only when
the scheduler waits; the emulator serves over loopback as always, and each snapshot (a line
stamped with its publication moment on that clock) is written into it at exactly that
moment while the clock passes it. Every request is real; only waiting is skipped. Each
scenario is run twice on the same schedule: as published (the default) and with a fixed
``--interval 30``. The first two snapshots are not counted.

    python bench/freshness_fake.py            # P = 60, 120, 300 (+-5 %), irregular 20-180 s
    python bench/freshness_fake.py --hours 2  # shorter
"""

from __future__ import annotations

import argparse
import io
import random
import time

from freshness import Client, Scenario, report
from harness import TOKEN, USER_ID, machine

from tailer import logs
from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.config import StartAt
from tailer.emulator import Emulator
from tailer.follower import ProjectFollower, Start
from tailer.pipeline import Pipeline
from tailer.scheduler import Scheduler
from tailer.shutdown import Shutdown
from tailer.sinks.stdout import StdoutSink

PROJECT = 1
INTERVAL = 30.0


class SharedClock(Shutdown):
    """The scheduler's clock and stop flag: a wait moves time on, writing each snapshot due
    on the way into the emulator at its moment; stops at ``until``."""

    def __init__(self, emu: Emulator, moments: list[float], until: float) -> None:
        super().__init__()
        self.emu, self.moments, self.until = emu, moments, until
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        target = min(self.now + max(0.0, seconds), self.until)
        while self.moments and self.moments[0] <= target:
            self.now = self.moments.pop(0)
            self.emu.write(PROJECT, [f"snapshot published {self.now:.3f}"])
        self.now = target
        if self.now >= self.until:
            self.event.set()
        return self.event.is_set()


class Screen(io.StringIO):
    """stdout: each line's delay from its stamp, and the reads so far, as it arrives."""

    def __init__(self, clock: SharedClock, client: Client) -> None:
        super().__init__()
        self.shared, self.client = clock, client

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.client.delays.append(self.shared.now - float(line.rsplit(" ", 1)[1]))
            self.client.reads.append(self.shared.emu.stats.by_path.get("/live/logs/read", 0))
        return len(text)


def schedule(scenario: Scenario, seed: int) -> list[float]:
    """Publication moments, drawn as the emulator draws its snapshot intervals."""
    rng = random.Random(seed)
    moments, at = [], 0.0
    while True:
        at += scenario.period * (1 + rng.uniform(-scenario.jitter, scenario.jitter))
        if at > scenario.duration:
            return moments
        moments.append(at)


def follow(scenario: Scenario, seed: int, *, rhythmic: bool) -> Client:
    client = Client("rhythm (default)" if rhythmic else "--interval 30")
    with Emulator(USER_ID, TOKEN).start() as emu:
        emu.add_project(PROJECT, "bench")
        emu.deploy(PROJECT)
        api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN))
        clock = SharedClock(emu, schedule(scenario, seed), until=scenario.duration + INTERVAL)
        clock.now = 1.5  # qc-tail starts a moment after the emulator
        follower = ProjectFollower(api, PROJECT, start=Start(StartAt.END), clock=clock.clock)
        Scheduler(
            [Pipeline([StdoutSink(Screen(clock, client))], [follower])],
            clock,
            interval=INTERVAL,
            max_interval=INTERVAL,
            clock=clock.clock,
            rhythmic=rhythmic,
            learn_fast=True,  # as tail -f
        ).run()
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    logs.configure("warning", "console")
    print(machine())
    seconds = options.hours * 3600
    scenarios = [
        Scenario(60, 0.05, seconds),
        Scenario(120, 0.05, seconds),
        Scenario(300, 0.05, seconds),
        Scenario(100, 0.8, seconds),
    ]
    results = []
    started = time.perf_counter()
    for index, scenario in enumerate(scenarios):
        seed = options.seed + index
        rhythm = follow(scenario, seed, rhythmic=True)
        fixed = follow(scenario, seed, rhythmic=False)
        results.append((scenario, rhythm, fixed))
    print(
        f"{options.hours:g} h of publishing per scenario, fake clock, seed {options.seed}; "
        f"{time.perf_counter() - started:.0f} s of real time"
    )
    report(results)


if __name__ == "__main__":
    main()

"""The scheduler polls each deployment as it publishes: on a fake clock against the emulator."""

from __future__ import annotations

import io
import itertools
import statistics
from collections.abc import Callable

import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.config import StartAt
from tailer.emulator import Emulator
from tailer.follower import ProjectFollower, Start
from tailer.lifecycle import Lifecycle
from tailer.metrics import Metrics
from tailer.pipeline import Pipeline
from tailer.retry import RetryPolicy
from tailer.scheduler import Scheduler
from tailer.shutdown import Shutdown
from tailer.sinks.stdout import StdoutSink

from .conftest import PROJECT, TOKEN, USER_ID

PERIOD = 60.0
INTERVAL = 30.0


class Publishing(Shutdown):
    """A stop flag whose waits advance a fake clock, publishing a one-line snapshot at each of
    ``moments`` on the way; stops at ``until``."""

    def __init__(self, emu: Emulator, moments: list[float], until: float) -> None:
        super().__init__()
        self.emu, self.moments, self.until = emu, list(moments), until
        self.now = 0.0
        self.published: list[float] = []
        self.before: dict[float, Callable[[], None]] = {}  # done just before that snapshot

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        target = min(self.now + max(0.0, seconds), self.until)
        while self.moments and self.moments[0] <= target:
            self.now = self.moments.pop(0)
            if self.now in self.before:
                self.before[self.now]()
            self.emu.write(PROJECT, [f"snapshot {len(self.published)}"])
            self.published.append(self.now)
        self.now = target
        if self.now >= self.until:
            self.event.set()
        return self.event.is_set()


class Screen(io.StringIO):
    """stdout that notes when each line reached it."""

    def __init__(self, time: Publishing) -> None:
        super().__init__()
        self.time = time
        self.arrivals: list[float] = []

    def write(self, text: str) -> int:
        self.arrivals += [self.time.now] * text.count("\n")
        return super().write(text)


@pytest.fixture
def api(emu: Emulator) -> QcApi:
    policy = RetryPolicy(max_attempts=1)
    return QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=policy, sleep=lambda s: None)


def follow(api: QcApi, time: Publishing, *, rhythmic: bool = True) -> Screen:
    """``tail -f -n 0`` until the fake clock runs out: each line's arrival on the screen."""
    screen = Screen(time)
    follower = ProjectFollower(api, PROJECT, start=Start(StartAt.END), clock=time.clock)
    Scheduler(
        [Pipeline([StdoutSink(screen)], [follower])],
        time,
        interval=INTERVAL,
        max_interval=INTERVAL,
        clock=time.clock,
        rhythmic=rhythmic,
    ).run()
    return screen


def test_lines_reach_the_screen_just_after_each_snapshot_is_published(emu, api):
    emu.deploy(PROJECT)
    moments = [7.0 + PERIOD * k for k in range(1, 40)]
    time = Publishing(emu, moments, until=moments[-1] + INTERVAL + 1)
    screen = follow(api, time)
    assert screen.getvalue().splitlines() == [f"snapshot {k}" for k in range(39)]
    delays = [a - p for a, p in zip(screen.arrivals, time.published, strict=True)][5:]
    assert statistics.median(delays) <= 3.0
    assert max(delays) <= 10.0
    reads = emu.stats.by_path["/live/logs/read"]
    assert reads <= 2.5 * len(moments)


def test_a_fixed_interval_keeps_its_pace(emu, api):
    emu.deploy(PROJECT)
    moments = [7.0 + PERIOD * k for k in range(1, 20)]
    time = Publishing(emu, moments, until=moments[-1] + INTERVAL + 1)
    screen = follow(api, time, rhythmic=False)
    assert len(screen.arrivals) == len(moments)
    assert len({round(at % INTERVAL, 6) for at in screen.arrivals}) == 1  # on the same beat


def test_the_learned_period_is_shown_and_exposed(emu, api):
    emu.deploy(PROJECT)
    moments = [7.0 + PERIOD * k for k in range(1, 15)]
    time = Publishing(emu, moments, until=moments[-1] + 1)
    screen = Screen(time)
    follower = ProjectFollower(api, PROJECT, start=Start(StartAt.END), clock=time.clock)
    metrics = Metrics()
    scheduler = Scheduler(
        [Pipeline([StdoutSink(screen)], [follower])],
        time,
        interval=INTERVAL,
        max_interval=INTERVAL,
        clock=time.clock,
        lifecycle=Lifecycle(metrics),
    )
    with capture_logs() as events:
        scheduler.run()
    learned = [e for e in events if e["event"] == "rhythm" and e["following"]]
    assert learned
    assert abs(learned[-1]["period"] - PERIOD) < 2.0
    assert learned[-1]["phase"] is not None
    assert abs(scheduler.periods()[PROJECT] - PERIOD) < 2.0
    exported = metrics.registry.get_sample_value(
        "qc_tail_publish_period_seconds", {"project_id": str(PROJECT), "name": follower.name}
    )
    assert exported == scheduler.periods()[PROJECT]
    metrics.forget(PROJECT)  # dropped: its series goes
    assert "qc_tail_publish_period_seconds{" not in generate_latest(metrics.registry).decode()


def test_a_stopped_deployment_is_polled_at_the_interval(emu, api):
    emu.deploy(PROJECT)
    moments = [7.0 + PERIOD * k for k in range(1, 13)]
    stopped = moments[-1]  # its last snapshot comes on the beat, after it stopped
    time = Publishing(emu, moments, until=stopped + 8 * INTERVAL)
    time.before = {stopped: lambda: emu.stop_deployment(PROJECT)}
    polls: list[float] = []
    follower = ProjectFollower(api, PROJECT, start=Start(StartAt.END), clock=time.clock)
    scheduler = Scheduler(
        [Pipeline([StdoutSink(io.StringIO())], [follower])],
        time,
        interval=INTERVAL,
        max_interval=INTERVAL,
        clock=time.clock,
    )
    scheduler.run(on_idle=lambda: polls.append(time.now))
    seen = next(at for at in polls if at >= stopped)  # the poll that found the last lines
    after = [at for at in polls if at >= seen]
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(after)}
    assert gaps == {INTERVAL}
    assert scheduler.periods() == {}

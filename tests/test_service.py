"""The daemon's objects as `qc-tail run` builds them, over a run that outlives a follower."""

from __future__ import annotations

from pathlib import Path

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.config import (
    ApiConfig,
    Config,
    DiscoveryConfig,
    OutputConfig,
    PollConfig,
    StateConfig,
)
from tailer.discovery import Discovery
from tailer.emulator import Emulator
from tailer.pipeline import Pipeline
from tailer.retry import RetryPolicy
from tailer.scheduler import Scheduler
from tailer.service import _pipelines
from tailer.shutdown import Shutdown

from .conftest import PROJECT, TOKEN, USER_ID

DRAIN = 10.0


class FakeTime(Shutdown):
    """A stop flag whose waits advance a fake clock instead of sleeping, up to ``until``."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.until = 0.0

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now = min(self.now + max(0.0, seconds), self.until)
        if self.now >= self.until:
            self.event.set()
        return self.event.is_set()

    def run(self, scheduler: Scheduler, seconds: float) -> None:
        """Let the daemon run for ``seconds`` of fake time."""
        self.until = self.now + seconds
        self.event.clear()
        scheduler.run()


def daemon(emu: Emulator, root: Path, time: FakeTime) -> tuple[list[Pipeline], Scheduler]:
    """A (re)start from disk: discovery on, files under ``root``."""
    config = Config(
        api=ApiConfig(base_url=emu.base_url, user_id=USER_ID, api_token=TOKEN),
        poll=PollConfig(interval=1.0, max_interval=1.0, drain=DRAIN),
        state=StateConfig(dir=root / "state"),
        discovery=DiscoveryConfig(enabled=True, interval=1.0, start="deployment"),
        output=OutputConfig(directory=root / "out"),
    )
    api = QcApi(
        emu.base_url,
        QcAuth(USER_ID, TOKEN),
        policy=RetryPolicy(max_attempts=1),
        sleep=lambda s: None,
    )
    pipelines = _pipelines(config, api, time)
    discovery = Discovery(api, config.discovery, clock=time.clock)
    scheduler = Scheduler(
        pipelines,
        time,
        interval=1.0,
        max_interval=1.0,
        drain=DRAIN,
        discovery=discovery,
        clock=time.clock,
    )
    return pipelines, scheduler


def test_a_project_discovered_again_resumes_from_the_cursors_saved_in_this_run(
    emu: Emulator, tmp_path: Path
) -> None:
    """A project followed from a cursor saved by an earlier run stops, is drained and dropped,
    then runs again: the new follower must resume from the cursors saved since the start,
    not from those loaded then (its old deployment's later lines would be written again)."""
    time = FakeTime()
    old = emu.deploy(PROJECT)
    emu.write(PROJECT, ["a", "b"])
    pipelines, scheduler = daemon(emu, tmp_path, time)
    time.run(scheduler, 2)
    for pipeline in pipelines:
        pipeline.close()
    emu.write(PROJECT, ["c"])
    _, scheduler = daemon(emu, tmp_path, time)  # starts with old's cursor after "b"
    time.run(scheduler, 2)
    emu.stop_deployment(PROJECT)
    time.run(scheduler, 3 * DRAIN)
    assert scheduler.slots == []  # no longer running, drained: dropped
    new = emu.deploy(PROJECT)
    emu.write(PROJECT, ["d"], deploy_id=new)
    time.run(scheduler, 2)  # discovered again
    out = tmp_path / "out" / str(PROJECT)
    assert (out / f"{old}.log").read_text().splitlines() == ["a", "b", "c"]
    assert (out / f"{new}.log").read_text().splitlines() == ["d"]

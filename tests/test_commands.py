"""What each command wires together: the pace of ``tail -f``."""

from __future__ import annotations

import pytest

from tailer import cli, commands, terminal
from tailer.emulator import Emulator
from tailer.scheduler import Scheduler
from tailer.shutdown import Shutdown

from .conftest import PROJECT, cli_env


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[Scheduler]:
    """Every scheduler a command builds."""
    built: list[Scheduler] = []

    class Recorded(Scheduler):
        def __init__(self, *args: object, **options: object) -> None:
            super().__init__(*args, **options)  # type: ignore[arg-type]
            built.append(self)

    monkeypatch.setattr(terminal, "Scheduler", Recorded)
    return built


def tail(emu: Emulator, *argv: str) -> None:
    emu.deploy(PROJECT)
    stopped = Shutdown()
    stopped.event.set()  # it begins, then stops at once
    commands.tail(cli.parse_args(["tail", str(PROJECT), *argv]), stopped, cli_env(emu))


def test_tail_follow_polls_as_published_without_idle_backoff(emu, made):
    tail(emu, "-f", "-n", "0")
    (scheduler,) = made
    assert scheduler.rhythmic and scheduler.learn_fast
    assert scheduler.max_interval == scheduler.interval == 30.0


def test_tail_follow_with_an_interval_polls_at_that_fixed_pace(emu, made):
    tail(emu, "-f", "-n", "0", "--interval", "5")
    (scheduler,) = made
    assert not scheduler.rhythmic
    assert scheduler.max_interval == scheduler.interval == 5.0

"""The follower across restarts: which deployments a restarted daemon still follows, and from
where, built from disk as `qc-tail run` builds it, against the emulator on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.emulator import Emulator
from tailer.follower import ProjectFollower, Start
from tailer.pipeline import Pipeline
from tailer.retry import RetryPolicy
from tailer.scheduler import Scheduler
from tailer.shutdown import Shutdown
from tailer.sinks.files import FileSink
from tailer.store import CursorStore

from .conftest import PROJECT, TOKEN, USER_ID


@pytest.fixture
def api(emu: Emulator) -> QcApi:
    policy = RetryPolicy(max_attempts=1)
    return QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=policy, sleep=lambda s: None)


class Daemon:
    """The follower, file output and cursors of one run; a new one is a restart from disk."""

    def __init__(self, api: QcApi, root: Path, start: str, deploy_id: str | None = None) -> None:
        self.store = CursorStore(root / "state")
        self.files = FileSink(root / "out")
        saved = self.store.load_all()
        self.files.recover(saved.values())
        mine = {d: c for (p, d), c in saved.items() if p == PROJECT}
        follower = ProjectFollower(
            api, PROJECT, deploy_id=deploy_id, start=Start(start), saved=mine
        )
        self.pipeline = Pipeline([self.files], [follower], save=self.store.save, saved=saved.keys())
        self.scheduler = Scheduler([self.pipeline], Shutdown(), interval=1.0, max_interval=1.0)

    def poll(self) -> None:
        self.scheduler.poll_once()

    def kill(self) -> None:
        """kill -9 between polls: everything in memory is gone."""
        self.pipeline.close()

    def lines(self, deploy_id: str) -> list[str]:
        path = self.files.path(PROJECT, deploy_id)
        return path.read_text().splitlines() if path.exists() else []


def test_a_restart_resumes_a_deployment_begun_at_its_end_with_no_new_line_yet(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """``start = "end"``: the first run starts after the lines already there and finds none
    new, so it delivers nothing. Lines written while it is down are new to it: the restart
    must deliver them, not start at the end again."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, ["before 0", "before 1"])
    first = Daemon(api, tmp_path, "end")
    first.poll()
    first.kill()
    emu.write(PROJECT, ["while down 0", "while down 1"])
    second = Daemon(api, tmp_path, "end")
    second.poll()
    assert second.lines(deploy_id) == ["while down 0", "while down 1"]


def test_a_restart_drains_a_deployment_followed_before_a_redeploy_while_down(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """``start = "deployment"``: the first run follows a deployment that has no line yet;
    it is redeployed while the daemon is down, and the old one's last line arrives late. The
    restart must still drain the old deployment (SPEC: redeploys drain it to its end)."""
    old = emu.deploy(PROJECT)
    first = Daemon(api, tmp_path, "deployment")
    first.poll()
    first.kill()
    new = emu.deploy(PROJECT)
    emu.write(PROJECT, ["new 0"], deploy_id=new)
    emu.write(PROJECT, ["old, late"], deploy_id=old)
    second = Daemon(api, tmp_path, "deployment")
    second.poll()
    assert (second.lines(old), second.lines(new)) == (["old, late"], ["new 0"])


def test_a_pinned_deployment_saves_no_cursor_for_the_successor_it_only_probes(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """A pinned follow reads its successor's offset (where its own lines end) and nothing
    else: the successor gets no cursor, so a restart does not count it as being followed."""
    pinned = emu.deploy(PROJECT)
    emu.write(PROJECT, ["pinned 0"])
    emu.deploy(PROJECT)
    daemon = Daemon(api, tmp_path, "deployment", deploy_id=pinned)
    daemon.poll()
    assert list(daemon.store.load_all()) == [(PROJECT, pinned)]
    assert daemon.lines(pinned) == ["pinned 0"]


def test_a_first_poll_that_delivers_leaves_the_cursor_after_its_lines(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """The first cursor a new reader saves is its starting point: it must reach the disk
    before the reader's lines are delivered, never after (a restart would read them again)."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, ["line 0", "line 1"])
    first = Daemon(api, tmp_path, "deployment")
    first.poll()
    first.kill()
    second = Daemon(api, tmp_path, "deployment")
    second.poll()
    assert second.lines(deploy_id) == ["line 0", "line 1"]

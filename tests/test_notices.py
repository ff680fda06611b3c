"""Stop notices: a followed deployment that leaves Running is announced once; ``done``."""

from __future__ import annotations

import io

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.config import StartAt
from tailer.follower import ProjectFollower, Start
from tailer.notices import StatusWatch
from tailer.reader import Batch

from .conftest import PROJECT, TOKEN, USER_ID


def watching(emu, *, pinned: str | None = None, **options):
    api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN))
    follower = ProjectFollower(api, PROJECT, deploy_id=pinned, start=Start(StartAt.END))
    assert list(follower.begin())
    stderr, notes = io.StringIO(), []
    now, wall = [0.0], [emu.model._clock()]
    watch = StatusWatch(
        api,
        lambda: [follower],
        interval=5.0,
        drain=60.0,
        note=notes.append,
        stderr=stderr,
        clock=lambda: now[0],
        wall=lambda: wall[0],
        **options,
    )
    return watch, follower, stderr, notes, now, wall


def test_a_stop_is_announced_once_and_a_project_waits_for_a_redeploy(emu):
    deploy_id = emu.deploy(PROJECT)
    watch, _, stderr, notes, now, _ = watching(emu)
    watch.check()
    assert stderr.getvalue() == ""
    emu.stop_deployment(PROJECT, "RuntimeError")
    watch.check()  # not due yet: asked every interval
    assert stderr.getvalue() == ""
    now[0] = 5.0
    watch.check()
    text = stderr.getvalue()
    assert text.startswith("qc-tail: [mean-reversion] stopped: RuntimeError at ")
    assert text.endswith(" UTC; waiting for a redeploy\n")
    assert [(n["type"], n["deploy_id"], n["status"]) for n in notes] == [
        ("status", deploy_id, "RuntimeError")
    ]
    now[0] = 10.0
    watch.check()
    assert stderr.getvalue() == text  # once
    assert not watch.done()  # a project followed across redeploys never is


def test_under_all_no_redeploy_is_awaited(emu):
    emu.deploy(PROJECT)
    watch, _, stderr, *_ = watching(emu, waits=False)
    emu.stop_deployment(PROJECT, "Stopped")
    watch.check()
    assert "stopped: Stopped" in stderr.getvalue()
    assert "waiting" not in stderr.getvalue()


def test_a_pinned_deployment_is_done_once_stopped_drained_and_read(emu):
    deploy_id = emu.deploy(PROJECT)
    watch, follower, stderr, _, now, wall = watching(emu, pinned=deploy_id)
    watch.check()
    assert not watch.done()  # running
    emu.stop_deployment(PROJECT)
    now[0] = 5.0
    watch.check()
    assert "waiting" not in stderr.getvalue()
    list(follower.poll())
    assert not watch.done()  # its late lines may still come
    wall[0] += 61
    emu.write(PROJECT, ["late"])
    assert not watch.done()  # read to its end, but before the drain was over
    batches = [event for event in follower.poll() if isinstance(event, Batch)]
    assert [batch.run.texts for batch in batches if batch.run] == [("late",)]
    assert not watch.done()
    list(follower.poll())  # finds nothing more
    assert watch.done()

"""Tests for tailer.lifecycle: each deployment's start and end said once per process."""

from __future__ import annotations

import structlog

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.emulator import Emulator
from tailer.follower import ProjectFollower
from tailer.lifecycle import Lifecycle
from tailer.metrics import Metrics
from tailer.retry import RetryPolicy

from .conftest import PROJECT, TOKEN, USER_ID


def api(emu: Emulator) -> QcApi:
    policy = RetryPolicy(base=0.0, cap=0.0, max_attempts=3, auth_base=0.0)
    return QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=policy, sleep=lambda s: None)


def said(logs: list[dict], event: str) -> list[tuple]:
    return [(e["project"], e["deploy"], e.get("status")) for e in logs if e["event"] == event]


def test_two_pipelines_following_one_deployment_say_its_start_and_end_once(emu):
    first = emu.deploy(PROJECT)
    client = api(emu)
    files, loki = ProjectFollower(client, PROJECT), ProjectFollower(client, PROJECT)
    metrics = Metrics()
    lifecycle = Lifecycle(metrics)
    with structlog.testing.capture_logs() as logs:
        for name, follower in (("files", files), ("Loki", loki)):
            follower.begin()
            lifecycle.observe(name, follower)
            lifecycle.observe(name, follower)  # each poll: nothing new
        emu.stop_deployment(PROJECT)
        lifecycle.dropped("files", files)
        ended_after_one = said(logs, "deployment_ended")
        lifecycle.dropped("Loki", loki)

    assert said(logs, "deployment_started") == [(PROJECT, first, None)]
    assert ended_after_one == []
    assert said(logs, "deployment_ended") == [(PROJECT, first, "Stopped")]


def test_a_redeploy_drained_ends_the_old_deployment_only(emu):
    first = emu.deploy(PROJECT)
    client = api(emu)
    follower = ProjectFollower(client, PROJECT, drain=0.0)
    lifecycle = Lifecycle()
    with structlog.testing.capture_logs() as logs:
        follower.begin()
        lifecycle.observe("files", follower)
        second = emu.deploy(PROJECT)
        emu.write(PROJECT, ["after"])
        emu.publish()
        for _ in range(3):  # the redeploy is found, then the old deployment is let go
            list(follower.poll())
            lifecycle.observe("files", follower)

    assert said(logs, "deployment_started") == [(PROJECT, first, None), (PROJECT, second, None)]
    assert [e[:2] for e in said(logs, "deployment_ended")] == [(PROJECT, first)]

"""Catch-ups through /live/export/logs: one file placed like a window, or windows on any doubt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.config import StartAt, load_config
from tailer.emulator import Emulator, Fault
from tailer.errors import ConfigError, ExportError
from tailer.export import ExportedLog, Exporter
from tailer.export_quota import ExportQuota
from tailer.follower import ProjectFollower, Start
from tailer.pipeline import Pipeline
from tailer.retry import RetryPolicy
from tailer.scheduler import Scheduler
from tailer.shutdown import Shutdown
from tailer.sinks.files import FileSink
from tailer.store import CursorStore

from .conftest import PROJECT, TOKEN, USER_ID, stamp
from .test_hostile import FakeServer
from .test_hostile import Reply as HostileReply

THRESHOLD = 300  # unread lines above which an export is asked for (tests keep backlogs small)
EXPORT = "/live/export/logs"
READ = "/live/logs/read"


@pytest.fixture
def api(emu: Emulator) -> QcApi:
    policy = RetryPolicy(max_attempts=1)
    return QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=policy, sleep=lambda s: None)


class Daemon:
    """A follower with an exporter, writing files and cursors; a new one is a restart."""

    def __init__(
        self, api: QcApi, root: Path, *, export: bool = True, quota: int = 30, spool=None
    ) -> None:
        self.store = CursorStore(root / "state")
        self.files = FileSink(root / "out")
        saved = self.store.load_all()
        self.files.recover(saved.values())
        mine = {d: c for (p, d), c in saved.items() if p == PROJECT}
        self.exporter = Exporter(
            api,
            ExportQuota(quota, root / "state" / "export-quota.json"),
            enabled=export,
            threshold=THRESHOLD,
            **({"spool": spool} if spool else {}),
        )
        follower = ProjectFollower(
            api, PROJECT, start=Start(StartAt.DEPLOYMENT), saved=mine, exporter=self.exporter
        )
        self.pipeline = Pipeline([self.files], [follower], save=self.store.save, saved=saved.keys())
        self.scheduler = Scheduler([self.pipeline], Shutdown(), interval=1.0, max_interval=1.0)

    def poll(self) -> None:
        self.scheduler.poll_once()

    def lines(self, deploy_id: str) -> list[str]:
        path = self.files.path(PROJECT, deploy_id)
        return path.read_text().splitlines() if path.exists() else []


def backlog(emu: Emulator, n: int, first: int = 0) -> str:
    if not emu.deploy_ids(PROJECT):
        emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(i) for i in range(first, first + n)])
    return emu.deploy_ids(PROJECT)[-1]


def fallbacks(events: list[dict]) -> list[str]:
    return [e["reason"] for e in events if e["event"] == "export_fallback"]


def test_a_large_backlog_is_read_from_one_export_and_a_few_windows(emu, api, tmp_path):
    deploy = backlog(emu, 3000)
    daemon = Daemon(api, tmp_path)
    with capture_logs() as events:
        daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(3000)]
    assert emu.stats.by_path[EXPORT] == 1
    assert emu.stats.by_path[READ] <= 3  # the probe, the check, the end
    assert daemon.exporter.calls == 1
    assert fallbacks(events) == []


def test_with_export_never_the_backlog_is_read_in_windows(emu, api, tmp_path):
    deploy = backlog(emu, 3000)
    daemon = Daemon(api, tmp_path, export=False)
    daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(3000)]
    assert EXPORT not in emu.stats.by_path
    assert emu.stats.by_path[READ] >= 3000 // 249


def test_a_small_backlog_is_read_in_windows(emu, api, tmp_path):
    deploy = backlog(emu, THRESHOLD - 10)
    daemon = Daemon(api, tmp_path)
    daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(THRESHOLD - 10)]
    assert EXPORT not in emu.stats.by_path


def test_only_the_unread_rest_of_a_deployment_counts_and_the_export_resumes_there(
    emu, api, tmp_path
):
    deploy = backlog(emu, 100)
    Daemon(api, tmp_path).poll()
    backlog(emu, 2000, first=100)
    daemon = Daemon(api, tmp_path)  # a restart: from the saved cursor
    daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(2100)]
    assert emu.stats.by_path[EXPORT] == 1


def test_rows_of_older_deployments_in_the_export_are_not_this_ones(emu, api, tmp_path):
    old = backlog(emu, 1000)
    new = emu.deploy(PROJECT)
    emu.write(PROJECT, [f"new {i}" for i in range(1500)])
    daemon = Daemon(api, tmp_path)
    daemon.poll()
    assert daemon.lines(new) == [f"new {i}" for i in range(1500)]
    assert daemon.lines(old) == []  # start = deployment: the current one only
    assert emu.stats.by_path[EXPORT] == 1


def _off(emu: Emulator) -> None:
    emu.export.enabled = False


def _quota_429(emu: Emulator) -> None:
    emu.export.quota = 0


def _quota_refusal(emu: Emulator) -> None:
    emu.export.quota, emu.export.over_quota = 0, "refusal"


def _auth(emu: Emulator) -> None:
    emu.faults.script([Fault("auth")], path=EXPORT)


def _half_json(emu: Emulator) -> None:
    emu.faults.script([Fault("truncated")], path=EXPORT)


def _spoiled(kind: str):
    return lambda emu: emu.export.spoil([kind])


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (_off, "unknown_endpoint"),
        (_quota_429, "over_quota"),
        (_quota_refusal, "over_quota"),
        (_auth, "auth"),
        (_spoiled("truncated"), "truncated"),
        (_spoiled("garbled"), "malformed"),
        (_half_json, "malformed"),
        (_spoiled("skewed"), "disagrees"),
    ],
    ids=["off", "429", "refusal", "auth", "truncated", "garbled", "half-json", "skewed"],
)
def test_a_failed_export_falls_back_to_windows_at_once_with_one_event(
    emu, api, tmp_path, spoil, reason
):
    deploy = backlog(emu, 3000)
    spoil(emu)
    daemon = Daemon(api, tmp_path)
    with capture_logs() as events:
        daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(3000)]
    assert fallbacks(events) == [reason]
    assert emu.stats.by_path[EXPORT] == 1  # not asked again in the same catch-up
    assert emu.stats.by_path[READ] >= 3000 // 249


def test_an_export_whose_rows_do_not_follow_the_cursor_is_dropped_for_windows(emu, api, tmp_path):
    deploy = backlog(emu, 1000)
    Daemon(api, tmp_path, export=False).poll()
    backlog(emu, 1489, first=1000)
    # After a restart one window (rows 1000..1244) tells the reader where the log stands;
    # the export then answers from row 1241, whose last checked row, 1244, it changed.
    emu.export.spoil(["altered"])
    daemon = Daemon(api, tmp_path)
    with capture_logs() as events:
        daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(2489)]
    assert fallbacks(events) == ["disagrees"]
    assert emu.stats.by_path[EXPORT] == 1


def test_a_later_backlog_of_a_running_follower_tries_an_export_again(emu, api, tmp_path):
    deploy = backlog(emu, 1000)
    emu.export.spoil(["truncated"])  # the first catch-up's export fails: windows
    daemon = Daemon(api, tmp_path)
    daemon.poll()
    backlog(emu, 1000, first=1000)
    with capture_logs() as events:
        daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(2000)]
    assert emu.export.served == 2
    assert fallbacks(events) == []


def test_an_unknown_endpoint_is_not_asked_again_by_later_catch_ups(emu, api, tmp_path):
    emu.export.enabled = False
    deploy = backlog(emu, 1000)
    daemon = Daemon(api, tmp_path)
    with capture_logs() as events:
        daemon.poll()
        backlog(emu, 1000, first=1000)
        daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(2000)]
    assert fallbacks(events) == ["unknown_endpoint"]
    assert daemon.exporter.calls == 1


class FullDisk:
    """A temporary file on a full disk: every write fails."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w+b")

    def write(self, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    def __getattr__(self, name: str):
        return getattr(self.file, name)


def test_no_room_for_the_exported_file_falls_back_to_windows(emu, api, tmp_path):
    deploy = backlog(emu, 3000)
    daemon = Daemon(api, tmp_path, spool=lambda: FullDisk(tmp_path / "spool"))
    with capture_logs() as events:
        daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(3000)]
    assert fallbacks(events) == ["spool"]


def test_the_quota_is_spent_at_most_as_configured_and_counted_across_restarts(emu, api, tmp_path):
    deploy = backlog(emu, 1000)
    Daemon(api, tmp_path, quota=1).poll()
    backlog(emu, 1000, first=1000)
    daemon = Daemon(api, tmp_path, quota=1)  # a restart: the call spent before still counts
    with capture_logs() as events:
        daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(2000)]
    assert emu.stats.by_path[EXPORT] == 1
    assert fallbacks(events) == ["quota"]
    saved = json.loads((tmp_path / "state" / "export-quota.json").read_text())
    assert len(saved) == 1


def test_the_quota_forgets_calls_older_than_its_period(tmp_path):
    now = [5000.0]
    quota = ExportQuota(2, tmp_path / "q.json", clock=lambda: now[0])
    assert quota.take() and quota.take() and not quota.take()
    now[0] += 1800
    assert ExportQuota(2, tmp_path / "q.json", clock=lambda: now[0]).take()


def test_an_unreadable_quota_file_is_reported_and_started_afresh(tmp_path):
    path = tmp_path / "q.json"
    path.write_text("{not json")
    with capture_logs() as events:
        assert ExportQuota(1, path).take()
    assert [e["event"] for e in events] == ["export_quota_unreadable"]


@pytest.mark.parametrize("export", [True, False], ids=["export", "windows"])
def test_lines_trimmed_before_being_read_are_a_gap_with_export_on_and_off(
    emu, api, tmp_path, export
):
    deploy = backlog(emu, 200)
    Daemon(api, tmp_path, export=export).poll()
    backlog(emu, 3000, first=200)
    emu.trim(PROJECT, 1000)
    daemon = Daemon(api, tmp_path, export=export)
    with capture_logs() as events:
        daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(200)] + [
        stamp(i) for i in range(1000, 3200)
    ]
    gaps = [e for e in events if e["event"] == "gap"]
    assert [g["lost"] for g in gaps] == ["unknown"]  # as the windows alone tell it
    assert fallbacks(events) == []


@pytest.mark.parametrize("export", [True, False], ids=["export", "windows"])
def test_lines_read_then_trimmed_are_not_repeated_with_export_on_and_off(
    emu, api, tmp_path, export
):
    deploy = backlog(emu, 500)
    Daemon(api, tmp_path, export=export).poll()
    backlog(emu, 3000, first=500)
    emu.trim(PROJECT, 400)
    daemon = Daemon(api, tmp_path, export=export)
    with capture_logs() as events:
        daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(3500)]
    assert [e for e in events if e["event"] == "gap"] == []


def test_a_redeploy_chain_read_from_its_start_shares_one_export(emu, api, tmp_path):
    first = backlog(emu, 1000)
    second = emu.deploy(PROJECT)
    emu.write(PROJECT, [f"second {i}" for i in range(1000)])
    store = CursorStore(tmp_path / "state")
    exporter = Exporter(api, ExportQuota(30), threshold=THRESHOLD)
    follower = ProjectFollower(api, PROJECT, start=Start(StartAt.PROJECT), exporter=exporter)
    files = FileSink(tmp_path / "out")
    pipeline = Pipeline([files], [follower], save=store.save)
    Scheduler([pipeline], Shutdown(), interval=1.0, max_interval=1.0).poll_once()
    assert files.path(PROJECT, first).read_text().splitlines() == [stamp(i) for i in range(1000)]
    assert files.path(PROJECT, second).read_text().splitlines() == [
        f"second {i}" for i in range(1000)
    ]
    assert emu.stats.by_path[EXPORT] == 1


@pytest.mark.parametrize(
    ("text", "export", "per_30min"),
    [("", "auto", 30), ('export = "never"\nexport_per_30min = 45', "never", 45)],
)
def test_the_api_section_says_whether_and_how_often_to_export(tmp_path, text, export, per_30min):
    path = tmp_path / "config.toml"
    path.write_text(f"[api]\n{text}\n")
    config = load_config(path, {})
    assert (config.api.export, config.api.export_per_30min) == (export, per_30min)


@pytest.mark.parametrize(
    ("line", "key"),
    [('export = "always"', "api.export"), ("export_per_30min = 46", "api.export_per_30min")],
)
def test_an_impossible_export_setting_names_its_key(tmp_path, line, key):
    path = tmp_path / "config.toml"
    path.write_text(f"[api]\n{line}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, {})
    assert error.value.key == key and error.value.exit_code == 78


def test_a_connection_reset_before_any_answer_is_unreachable_not_truncated(emu, api, tmp_path):
    deploy = backlog(emu, 3000)
    emu.faults.script([Fault("reset")], path=EXPORT)
    daemon = Daemon(api, tmp_path)
    with capture_logs() as events:
        daemon.poll()
    assert daemon.lines(deploy) == [stamp(i) for i in range(3000)]
    assert fallbacks(events) == ["unreachable"]


JSON = (("Content-Type", "application/json"),)


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (HostileReply(404, b'{"success": false}', JSON), "unknown_endpoint"),
        (HostileReply(403, b"", JSON), "auth"),
        (
            HostileReply(200, b'{"success": false, "errors": ["Hash doesn\'t match."]}', JSON),
            "auth",
        ),
        (HostileReply(200, b'{"success": true, "logs": []}', JSON), "malformed"),
        (HostileReply(200, b"{cut", JSON), "malformed"),
        (
            HostileReply(200, b'{"success": false, "errors": ["Too many requests"]}', JSON),
            "over_quota",
        ),
        (
            HostileReply(200, b'{"success": false, "errors": ["Project not found"]}', JSON),
            "refused",
        ),
        (HostileReply(503, b"", JSON), "server_error"),
        (HostileReply(302, b"", (("Location", "http://elsewhere/"),)), "refused"),
    ],
)
def test_each_answer_that_is_not_a_file_says_why(tmp_path, reply, reason):
    server = FakeServer()
    try:
        server.serve(reply)
        hostile = QcApi(server.base_url, QcAuth(USER_ID, TOKEN), policy=RetryPolicy(max_attempts=1))
        with (tmp_path / "spool").open("w+b") as spool, pytest.raises(ExportError) as error:
            hostile.export_logs(PROJECT, "L-x", spool, timeout=10)
        hostile.close()
    finally:
        server.stop()
    assert error.value.reason == reason
    assert len(server.seen) == 1  # never retried


def test_an_exported_file_is_read_by_row_without_being_held_in_memory(tmp_path):
    path = tmp_path / "export"
    path.write_bytes("".join(f"row é {i}\r\n" for i in range(10)).encode() + b"cut")
    with path.open("rb") as file:
        exported = ExportedLog(file)
        assert len(exported) == 10  # the last row, without its newline, is not one
        assert exported.rows(3, 6) == ("row é 3", "row é 4", "row é 5")

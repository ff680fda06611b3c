"""The Loki output, against a recording fake of Loki (tests/loki_recorder.py) that can fail on
cue; tests/test_loki_real.py runs what real Loki alone can show against the real binary."""

from __future__ import annotations

import contextlib
import json
import random
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from tailer.config import LokiConfig
from tailer.cursor import Cursor
from tailer.emulator import Emulator
from tailer.errors import OutputError
from tailer.records import Line
from tailer.retry import RetryPolicy
from tailer.sinks.loki import LokiSink

from .conftest import (
    TOKEN,
    USER_ID,
    cli_env,
    kill_when,
    qc_tail,
    run,
    secrets_in,
    terminated,
    trickling,
)
from .conftest import daemon_config as conftest_daemon_config
from .loki_recorder import LokiRecorder

NS = 1_000_000_000
NEW_YORK = ZoneInfo("America/New_York")
QUICK = RetryPolicy(max_attempts=3, base=0.0, cap=0.0)


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=NEW_YORK).timestamp())


def line(position: int, text: str, deploy: str = "L-a", launched: float | None = None) -> Line:
    return Line(7, deploy, "algo", 100 + position, position, text, launched)


def sink(loki: LokiRecorder, **config: object) -> LokiSink:
    return LokiSink(LokiConfig(url=loki.url, **config), policy=QUICK, sleep=lambda s: None)  # type: ignore[arg-type]


@pytest.fixture
def loki() -> Iterator[LokiRecorder]:
    with LokiRecorder(check_age=False) as recorder:
        yield recorder


def test_one_stream_per_deployment_with_the_contract_labels(loki):
    out = sink(loki, labels={"env": "paper"})
    out.write([line(0, "2026-11-20 09:30:00 a"), line(0, "2026-11-20 09:30:00 b", "L-b")])
    out.flush()
    labels = {frozenset(key) for key in loki.streams()}
    common = {("job", "qc-tail"), ("env", "paper"), ("project_id", "7"), ("name", "algo")}
    common.add(("service_name", "algo"))  # Loki's own, from name
    assert labels == {
        frozenset({*common, ("deploy_id", "L-a")}),
        frozenset({*common, ("deploy_id", "L-b")}),
    }


def test_timestamps_are_the_lines_own_plus_their_position(loki):
    out = sink(loki)
    out.write(
        [
            line(40, "2026-11-20 09:30:00 first"),
            line(41, "2026-11-20 09:30:00 same second"),
            line(42, "  at Algorithm.OnData() in main.py:line 42"),  # no timestamp of its own
            line(43, "2026-11-20 09:30:05 later"),
        ]
    )
    out.flush()
    base = epoch("2026-11-20T09:30:00") * NS
    assert loki.entries(deploy_id="L-a") == [
        (base + 40, "2026-11-20 09:30:00 first"),
        (base + 41, "2026-11-20 09:30:00 same second"),
        (base + 42, "  at Algorithm.OnData() in main.py:line 42"),
        (epoch("2026-11-20T09:30:05") * NS + 43, "2026-11-20 09:30:05 later"),
    ]


def test_the_first_lines_without_a_timestamp_take_the_launch_time(loki):
    launched = epoch("2026-11-20T09:00:00") + 0.0
    out = sink(loki)
    out.write([line(0, "Launching analysis for L-a", launched=launched)])
    out.flush()
    assert loki.entries() == [(int(launched) * NS, "Launching analysis for L-a")]


def test_timestamps_never_go_backwards_within_a_stream(loki):
    out = sink(loki)
    out.write([line(0, "2026-11-20 10:00:00 late clock"), line(1, "2026-11-20 09:00:00 earlier")])
    out.flush()
    (first, _), (second, _) = loki.entries()
    assert second == first + 1


def test_identical_repeated_lines_all_survive(loki):
    out = sink(loki)
    out.write([line(i, "2026-11-20 09:30:00 heartbeat") for i in range(5)])
    out.flush()
    assert loki.lines() == ["2026-11-20 09:30:00 heartbeat"] * 5


def wide(position: int) -> Line:
    """A line of 2 kB: a few hundred fill more than the block Loki still dedupes in."""
    return line(
        position,
        f"2026-11-20 09:{position // 60 % 60:02d}:{position % 60:02d} {position} {'x' * 2000}",
    )


def test_after_a_crash_only_what_loki_lacks_is_pushed_again(loki):
    lines = [wide(i) for i in range(350)]
    first = sink(loki)
    first.write(lines[:100])
    first.flush()
    saved = first.stamp(Cursor(7, "L-a", position=100))
    first.write(lines[100:300])
    first.flush()  # pushed, then "crashed" before the cursor was saved
    pushes, queries = loki.pushes, loki.queries
    again = sink(loki)
    again.recover([saved])
    with capture_logs() as events:
        again.write(lines[100:250])  # read again, fewer than were pushed: Loki has them all
        again.flush()
        again.write(lines[250:350])  # asked again: only 300..349 are new to Loki
        again.flush()
    assert loki.lines() == [entry.text for entry in lines]
    assert loki.count() == 350  # what count_over_time counts: no line twice
    assert (loki.copies_stored, loki.duplicates_dropped) == (0, 0)
    assert loki.queries - queries == 2
    assert [len(json.loads(b)["streams"][0]["values"]) for b in loki.bodies[pushes:]] == [50]
    held = [e["entries"] for e in events if e["event"] == "loki_already_has"]
    assert held == [150, 50]


def test_a_stream_is_asked_about_once_per_run_when_all_goes_well(loki):
    out = sink(loki)
    for start in range(0, 30, 10):
        out.write([line(i, f"2026-11-20 09:30:{i:02d} e{i}") for i in range(start, start + 10)])
        out.flush()
    assert loki.queries == 1
    assert loki.count() == 30


@pytest.mark.parametrize("status", [403, 404])
def test_where_queries_are_refused_it_pushes_again_and_says_so_once(status):
    with LokiRecorder(check_age=False, refuse_queries=status) as loki:
        lines = [wide(i) for i in range(300)]
        first = sink(loki)
        first.write(lines[:200])
        first.flush()  # pushed, then "crashed" before the cursor was saved
        again = sink(loki)
        with capture_logs() as events:
            again.write(lines)
            again.flush()
            again.write([wide(300)])
            again.flush()
        assert loki.lines() == [entry.text for entry in [*lines, wide(300)]]
        assert loki.copies_stored > 0  # what the fallback costs: copies a metric query counts
    unavailable = [e for e in events if e["event"] == "loki_queries_unavailable"]
    assert len(unavailable) == 1 and str(status) in unavailable[0]["reason"]
    assert "count_over_time" in unavailable[0]["hint"]


def test_without_a_query_url_it_says_so_at_start():
    with capture_logs() as events:
        out = LokiSink(LokiConfig(url="http://127.0.0.1:9/custom/ingest"))
    out.close()
    assert [e["event"] for e in events] == ["loki_queries_unavailable"]
    assert "query_url" in events[0]["hint"]


def test_a_push_left_without_an_answer_is_asked_about_before_it_goes_again(loki):
    loki.faults.script(["lost"])  # stored, then the connection is reset: no answer
    lines = [wide(i) for i in range(300)]
    out = sink(loki)
    out.write(lines)
    with pytest.raises(OutputError, match="Loki is asked what it has"):
        out.flush()
    assert out.stamp(Cursor(7, "L-a")) == Cursor(7, "L-a")  # the cursor does not move
    out.write(lines)  # the scheduler reads the same lines again
    out.flush()
    assert loki.pushes == 1
    assert loki.count() == 300 and loki.lines() == [entry.text for entry in lines]


def test_queries_carry_the_tenant_and_the_push_credentials_by_default():
    with LokiRecorder(check_age=False, require_auth="Bearer s3cret", require_tenant=True) as loki:
        out = sink(loki, tenant_id="team-a", bearer_token="s3cret")
        out.write([line(0, "2026-11-20 09:30:00 a")])
        out.flush()
        assert loki.queries == 1 and loki.lines() == ["2026-11-20 09:30:00 a"]


def test_queries_may_have_credentials_of_their_own():
    with LokiRecorder(check_age=False, require_auth="Bearer reader") as loki:
        config = {"bearer_token": "writer", "query_bearer_token": "reader"}
        out = sink(loki, **config)
        out.write([line(0, "2026-11-20 09:30:00 a")])
        with pytest.raises(OutputError):  # the push is refused: the query went through first
            out.flush()
        assert loki.queries == 1
        assert loki.authorizations == ["Bearer writer"] * 3


def test_big_batches_are_split_and_gzipped(loki):
    out = sink(loki, batch_size=20_000)
    out.write([line(i, f"2026-11-20 09:30:00 {'x' * 500} {i}") for i in range(200)])
    out.flush()
    assert loki.pushes >= 5
    assert len(loki.lines()) == 200
    bodies = loki.bodies
    for (encoding, sent), body in zip(loki.wire, bodies, strict=True):
        assert encoding == "gzip"
        assert sent < len(body) / 5  # lines of repeated text shrink
    assert max(len(body) for body in bodies) <= 20_000 * 1.1


def test_tenant_and_bearer_token_are_sent(tmp_path):
    with LokiRecorder(check_age=False, require_auth="Bearer s3cret") as loki:
        out = sink(loki, tenant_id="team-a", bearer_token="s3cret")
        out.write([line(0, "2026-11-20 09:30:00 a")])
        out.flush()
        assert loki.tenants == ["team-a"]
        assert loki.lines() == ["2026-11-20 09:30:00 a"]


@pytest.mark.parametrize("kind", ["429", "500", "503"])
def test_transient_failures_are_retried_with_the_same_payload(loki, kind):
    loki.faults.script([kind], retry_after=0)
    out = sink(loki)
    out.write([line(0, "2026-11-20 09:30:00 a")])
    out.flush()
    assert loki.lines() == ["2026-11-20 09:30:00 a"]
    assert len(set(loki.bodies)) == 1  # the retry pushed exactly the same entries


def test_an_outage_raises_output_error_and_the_cursor_keeps_its_timestamp(loki):
    out = sink(loki)
    out.write([line(0, "2026-11-20 09:30:00 a")])
    out.flush()
    before = out.stamp(Cursor(7, "L-a"))
    loki.outage(True)
    out.write([line(1, "2026-11-20 09:30:01 b")])
    with pytest.raises(OutputError):
        out.flush()
    assert out.stamp(Cursor(7, "L-a")) == before
    loki.outage(False)
    out.write([line(1, "2026-11-20 09:30:01 b")])
    out.flush()
    assert loki.lines() == ["2026-11-20 09:30:00 a", "2026-11-20 09:30:01 b"]


def test_a_400_refuses_only_the_entries_loki_names_and_they_are_reported_once():
    recent = datetime.now(NEW_YORK).replace(microsecond=0) - timedelta(hours=1)
    old = recent - timedelta(days=8)
    with LokiRecorder() as loki:  # Loki's defaults: lines older than a week are refused
        out = sink(loki)
        with capture_logs() as events:
            out.write([line(i, f"{old:%Y-%m-%d %H:%M:%S} old {i}") for i in range(3)])
            out.write([line(i, f"{recent:%Y-%m-%d %H:%M:%S} new {i}") for i in range(3, 5)])
            out.flush()
            out.write([line(i, f"{old:%Y-%m-%d %H:%M:%S} b{i}", deploy="L-b") for i in range(2)])
            out.flush()
        assert loki.pushes == 2  # not retried
        assert loki.lines() == [f"{recent:%Y-%m-%d %H:%M:%S} new {i}" for i in range(3, 5)]
        assert loki.rejected == 5
    assert out.dropped == 5
    rejected = [e for e in events if e["event"] == "loki_rejected"]
    assert [(e["reason"], e["entries"], e["log_level"]) for e in rejected] == [
        ("too old", 3, "warning"),
        ("too old", 2, "debug"),
    ]
    assert "reject_old_samples" in rejected[0]["hint"]
    assert "3 errors like" in rejected[0]["loki_says"]


def test_a_400_that_names_no_entry_refused_the_whole_push(loki):
    loki.faults.script(["400"])
    out = sink(loki)
    out.write([line(i, f"2026-11-20 09:30:0{i} e{i}") for i in range(4)])
    out.flush()
    assert (out.dropped, loki.lines()) == (4, [])


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        (401, "Loki refuses our credentials"),
        (403, "Loki forbids this to our credentials"),
        (404, "no Loki API at"),
        (405, "Loki refuses the request (HTTP 405"),
        (409, "Loki refuses the request (HTTP 409"),
    ],
)
def test_refusals_other_than_400_are_waited_out_and_nothing_is_lost(loki, status, problem):
    out = sink(loki)
    out.write([line(0, "2026-11-20 09:30:00 a")])
    out.flush()
    loki.refuse_pushes = status
    with capture_logs() as events:
        for _ in range(3):  # three rounds of the scheduler
            out.write([line(1, "2026-11-20 09:30:01 b")])
            with pytest.raises(OutputError, match=re.escape(problem)):
                out.flush()
        loki.refuse_pushes = None
        out.write([line(1, "2026-11-20 09:30:01 b")])
        out.flush()
    assert loki.lines() == ["2026-11-20 09:30:00 a", "2026-11-20 09:30:01 b"]
    assert out.dropped == 0
    refusing = [e for e in events if e["event"] == "loki_refusing"]
    assert len(refusing) == 1 and problem in refusing[0]["problem"]
    assert [e["event"] for e in events if e["event"] == "loki_accepting"] == ["loki_accepting"]


def test_a_token_rotated_for_a_while_loses_no_line():
    sent = [line(i, f"2026-11-20 09:{i // 60:02d}:{i % 60:02d} e{i}") for i in range(350)]
    with LokiRecorder(check_age=False, require_auth="Bearer s3cret") as loki:
        out = sink(loki, bearer_token="s3cret")
        cursor = 0
        for end in range(50, 351, 50):  # the scheduler's rounds: from the cursor on
            loki.require_auth = "Bearer rotated" if 100 <= end < 350 else "Bearer s3cret"
            out.write(sent[cursor:end])
            with contextlib.suppress(OutputError):
                out.flush()
                cursor = end
        assert loki.lines() == [entry.text for entry in sent]
        assert loki.count() == 350
        assert out.dropped == 0


def test_a_413_splits_the_push_until_it_fits(loki):
    loki.max_body_bytes = 40_000  # gzipped bodies: random text does not shrink
    rng = random.Random(5)
    texts = [f"2026-11-20 09:30:00 {rng.randbytes(3000).hex()}" for _ in range(40)]
    out = sink(loki, batch_size=1_000_000)
    out.write([line(i, text) for i, text in enumerate(texts)])
    out.flush()
    assert loki.lines() == texts
    assert 413 in [status for status, _ in loki.requests]
    assert out.dropped == 0


def test_a_single_entry_too_large_for_the_endpoint_is_dropped_and_counted(loki):
    loki.max_body_bytes = 1_000
    rng = random.Random(5)
    out = sink(loki)
    out.write([line(0, f"2026-11-20 09:30:00 {rng.randbytes(3000).hex()}")])
    out.write([line(1, "2026-11-20 09:30:01 small")])
    with capture_logs() as events:
        out.flush()
    assert loki.lines() == ["2026-11-20 09:30:01 small"]
    assert out.dropped == 1
    assert [e["reason"] for e in events if e["event"] == "loki_rejected"] == ["too large"]


@pytest.mark.parametrize("char", ["x", "é", "€", "😀"])
def test_a_line_longer_than_loki_takes_is_truncated_with_a_marker_and_counted(loki, char):
    text = "2026-11-20 09:30:00 " + char * (300_000 // len(char.encode()))
    out = sink(loki)
    with capture_logs() as events:
        out.write([line(0, text), line(1, text), line(2, "2026-11-20 09:30:01 short")])
        out.flush()
    first, second, third = loki.lines()
    size = len(text.encode())
    marker = f" [qc-tail: truncated from {size} bytes]"
    assert first == second and first.endswith(marker) and text.startswith(first[: -len(marker)])
    assert 262_144 - 3 <= len(first.encode()) <= 262_144
    assert third == "2026-11-20 09:30:01 short"
    assert (out.truncated, out.dropped) == (2, 0)
    truncated = [e for e in events if e["event"] == "loki_line_truncated"]
    assert [e["log_level"] for e in truncated] == ["warning", "debug"]


# -- the daemon with files and Loki ----------------------------------------------------------

PROJECTS = (11, 22)


def daemon_config(tmp_path: Path, emu: Emulator, loki_url: str) -> Path:
    return conftest_daemon_config(tmp_path, emu, more=f'[output.loki]\nurl = "{loki_url}"\n')


@pytest.fixture
def fleet() -> Iterator[Emulator]:
    with Emulator(user_id=USER_ID, api_token=TOKEN, seed=9).start() as emu:
        for project_id in PROJECTS:
            emu.add_project(project_id, f"algo-{project_id}")
            emu.deploy(project_id)
        yield emu
        assert emu.stats.oversized_windows == 0


_RECENT = datetime.now(NEW_YORK).replace(tzinfo=None, microsecond=0) - timedelta(hours=3)
"""Where ``stamped`` lines begin: recent in the algorithm time zone, so that Loki's age checks
(a week back, ten minutes ahead) pass on whatever day the suite runs."""


def stamped(n: int) -> str:
    return f"{_RECENT + timedelta(seconds=n):%Y-%m-%d %H:%M:%S} e{n}"


def loki_ahead_of_cursors(tmp_path: Path, loki: LokiRecorder) -> bool:
    """Loki holds lines its saved cursor does not account for (a kill now re-pushes them)."""
    for path in (tmp_path / "state" / "loki" / "cursors").glob("*/*.json"):
        try:
            cursor = json.loads(path.read_text())
        except ValueError:
            continue
        if len(loki.entries(deploy_id=cursor["deploy_id"])) > cursor["position"]:
            return True
    return False


def test_kill_9_with_loki_failing_leaves_every_line_exactly_once(tmp_path, fleet):
    rng = random.Random(7)
    ahead = 0
    with LokiRecorder(check_age=False) as loki:
        loki.faults.script(["503", "ok", "429", "ok", "500"], retry_after=0)  # then random
        loki.faults.random(rate=0.2, kinds=("429", "500", "503"), seed=3, retry_after=0)
        path = daemon_config(tmp_path, fleet, loki.url)
        written = 0
        kill = 0
        while kill < 12 or (ahead < 3 and kill < 30):  # on a loaded machine aim some more
            kill += 1
            for project_id in PROJECTS:
                burst = rng.randint(50, 3000)
                fleet.write(project_id, [stamped(written + i) for i in range(burst)])
                written += burst
                if rng.random() < 0.2:
                    fleet.deploy(project_id)
            fleet.publish()
            process = subprocess.Popen(
                qc_tail("--config", str(path), "run"),
                env=cli_env(fleet),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if kill % 2:  # half at a random instant, half just after a push it did not save
                time.sleep(rng.uniform(0.4, 1.2))
                process.send_signal(signal.SIGKILL)
            else:
                time.sleep(0.3)
                ahead += kill_when(process, lambda: loki_ahead_of_cursors(tmp_path, loki), rng)
            process.wait(timeout=10)
        loki.faults.clear()
        result = run(fleet, "--config", str(path), "run", "--once")
        assert result.returncode == 0, result.stderr
        assert ahead >= 3, f"only {ahead} kills landed between a push and its cursor"
        for project_id in PROJECTS:
            for deploy_id in fleet.deploy_ids(project_id):
                expected = fleet.published(project_id, deploy_id)
                assert loki.lines(deploy_id=deploy_id) == expected, deploy_id
                stamps = [ts for ts, _ in loki.entries(deploy_id=deploy_id)]
                assert len(set(stamps)) == len(stamps)
                assert loki.count(deploy_id=deploy_id) == len(expected)  # count_over_time
        assert loki.same_ts_different_line == 0
        assert loki.copies_stored == 0
        assert loki.queries > kill  # each start asked Loki what it had before pushing
        assert loki.faults_injected > 0


def test_a_loki_outage_holds_back_neither_files_nor_lines_for_loki(tmp_path, fleet):
    project_id = PROJECTS[0]
    deploy_id = fleet.deploy_ids(project_id)[-1]
    with LokiRecorder(check_age=False) as loki:
        loki.outage(True)
        path = daemon_config(tmp_path, fleet, loki.url)
        process = subprocess.Popen(
            qc_tail("--config", str(path), "run"),
            env=cli_env(fleet),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            expected = [stamped(n) for n in range(3000)]
            fleet.write(project_id, expected)
            fleet.publish()
            log = tmp_path / "out" / str(project_id) / f"{deploy_id}.log"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (
                log.exists() and len(log.read_text().splitlines()) == 3000
            ):
                time.sleep(0.05)
            assert log.read_text().splitlines() == expected  # files flowed during the outage
            assert loki.lines() == []
            time.sleep(2)  # the outage goes on for a while (many retry rounds)
            loki.outage(False)
            assert loki.wait_for_lines(3000, timeout=20, deploy_id=deploy_id) == expected
        finally:
            code, stderr = terminated(process)
    assert code == 0, stderr
    assert secrets_in(stderr) == []
    failing = [json.loads(x) for x in stderr.splitlines() if '"poll_failing"' in x]
    assert len(failing) == 1 and "Loki" in failing[0]["error"]


def closed_port() -> int:
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def test_run_once_with_loki_down_writes_every_file_then_exits_74_naming_loki(tmp_path):
    """An output that cannot be brought up to date holds back no other: ``--once`` writes
    every deployment's file, then exits 74 saying which output is behind (its URL without
    the credentials in it)."""
    port = closed_port()
    url = f"http://qc:hunter2-secret@127.0.0.1:{port}/loki/api/v1/push"
    with Emulator(user_id=USER_ID, api_token=TOKEN, seed=9).start() as emu:
        projects = (11, 22, 33)
        for project_id in projects:
            emu.add_project(project_id, f"algo-{project_id}")
            emu.deploy(project_id)
            emu.write(project_id, [stamped(n) for n in range(50)])
        emu.publish()
        result = run(emu, "--config", str(daemon_config(tmp_path, emu, url)), "run", "--once")
        for project_id in projects:
            deploy_id = emu.deploy_ids(project_id)[-1]
            log = tmp_path / "out" / str(project_id) / f"{deploy_id}.log"
            assert log.read_text().splitlines() == [stamped(n) for n in range(50)], project_id
    assert result.returncode == 74, result.stderr
    assert "hunter2" not in result.stderr and "qc:" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("qc-tail: error: ")
    assert f"Loki at http://***@127.0.0.1:{port}/loki/api/v1/push" in last
    assert "could not be brought up to date" in last and "will retry" not in last
    assert last.endswith("; up to date: files")


def test_a_400_does_not_stop_the_other_outputs(tmp_path, fleet):
    project_id = PROJECTS[0]
    deploy_id = fleet.deploy_ids(project_id)[-1]
    with LokiRecorder() as loki:
        loki.faults.script(["400"])
        path = daemon_config(tmp_path, fleet, loki.url)
        fleet.write(project_id, [stamped(n) for n in range(10)])
        fleet.publish()
        result = run(fleet, "--config", str(path), "run", "--once")
        assert result.returncode == 0, result.stderr
        log = tmp_path / "out" / str(project_id) / f"{deploy_id}.log"
        assert log.read_text().splitlines() == [stamped(n) for n in range(10)]
        rejected = [json.loads(x) for x in result.stderr.splitlines() if '"loki_rejected"' in x]
        assert [event["loki_says"] for event in rejected] == ["fault injected: 400 Bad Request"]
        assert [event["reason"] for event in rejected] == ["refused"]
        fleet.write(project_id, [stamped(n) for n in range(10, 15)])
        fleet.publish()
        result = run(fleet, "--config", str(path), "run", "--once")
        assert loki.lines(deploy_id=deploy_id) == [stamped(n) for n in range(10, 15)]


def test_sigterm_while_a_push_hangs_exits_0_at_once(tmp_path, fleet):
    """A Loki that accepts the connection and never answers: the push would hang for its
    timeouts and retries (about 30 s), past systemd's stop timeout. SIGTERM must abandon it
    (its cursor is not saved; after a restart the same push is the same entries)."""
    project_id = PROJECTS[0]
    deploy_id = fleet.deploy_ids(project_id)[-1]
    with socket.create_server(("127.0.0.1", 0), backlog=16) as black_hole:  # never accepts
        url = f"http://127.0.0.1:{black_hole.getsockname()[1]}/loki/api/v1/push"
        fleet.write(project_id, [stamped(n) for n in range(10)])
        fleet.publish()
        process = subprocess.Popen(
            qc_tail("--config", str(daemon_config(tmp_path, fleet, url)), "run"),
            env=cli_env(fleet),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        log = tmp_path / "out" / str(project_id) / f"{deploy_id}.log"
        deadline = time.monotonic() + 20
        while not (log.exists() and log.read_text().count("\n") == 10):  # files: delivered;
            assert time.monotonic() < deadline  # the Loki pipeline's push goes out next
            time.sleep(0.05)
        time.sleep(0.5)  # the push is in flight, and hangs
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=8)  # systemd's TimeoutStopSec is 10 s
        finally:
            process.kill()
            assert process.stderr is not None
            with process.stderr:
                stderr = process.stderr.read()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    with LokiRecorder(check_age=False) as loki:  # Loki is back: the abandoned push is made
        path = daemon_config(tmp_path, fleet, loki.url)
        result = run(fleet, "--config", str(path), "run", "--once")
        assert result.returncode == 0, result.stderr
        assert loki.lines(deploy_id=deploy_id) == [stamped(n) for n in range(10)]


@pytest.mark.parametrize(
    ("head", "drip"),
    [
        (b"", b"HTTP/1.1 204 No Content\r\n\r\n" * 20),  # the status line, a byte at a time
        (b"HTTP/1.1 204 No Content\r\nX-Slow: ", b"y" * 400),  # a header that never ends
    ],
)
def test_a_trickling_loki_cannot_hold_a_push_past_its_timeout(head, drip):
    """Each read gets a byte in time, so only a deadline for the whole push ends it (the
    Loki worker would otherwise stop the watchdog's pings, and systemd restart qc-tail)."""
    raised: list[BaseException] = []
    with trickling(head, drip) as url:  # not a /push URL: no query is asked first
        out = LokiSink(LokiConfig(url=url), policy=QUICK, sleep=lambda s: None, timeout=1.0)

        def push() -> None:
            try:
                out.write([line(0, "2026-11-20 09:30:00 a")])
                out.flush()
            except BaseException as exc:
                raised.append(exc)

        worker = threading.Thread(target=push, daemon=True)
        worker.start()
        worker.join(timeout=60)  # a hang guard, not a measurement
        assert not worker.is_alive(), "the push outlived its timeout"
    assert len(raised) == 1 and isinstance(raised[0], OutputError), raised
    assert "timeout" in str(raised[0])

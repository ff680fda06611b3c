"""The Loki output against a real Grafana Loki (the single binary named by
``$QC_TAIL_TEST_LOKI``; skipped without it): what only real Loki shows, such as what
``count_over_time`` counts after a crash."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tailer.config import LokiConfig
from tailer.emulator import Emulator
from tailer.records import Line
from tailer.sinks.loki import LokiSink

from .conftest import TOKEN, USER_ID, cli_env, qc_tail, run
from .conftest import daemon_config as conftest_daemon_config
from .real_loki import DelayingProxy, RealLoki, needs_loki, selector

pytestmark = needs_loki

NS = 1_000_000_000
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime.now(NEW_YORK).replace(tzinfo=None, microsecond=0)
"""Stamps are relative to now: Loki refuses lines older than a week or ahead of its clock."""
SPAN = (time.time_ns() - 9 * 86400 * NS, time.time_ns() + 3600 * NS)  # what a query covers


def ns(moment: datetime) -> int:
    return int(moment.replace(tzinfo=NEW_YORK).timestamp()) * NS


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealLoki]:
    with RealLoki(tmp_path_factory.mktemp("loki")) as loki:
        yield loki


def sink(real: RealLoki, job: str) -> LokiSink:
    return LokiSink(LokiConfig(url=real.url, labels={"job": job, "env": "paper"}))


def test_labels_and_timestamps_are_what_the_readme_says(real):
    launched = NOW - timedelta(minutes=30)
    texts = [
        "Launching analysis for L-doc",  # no timestamp, first: the launch time
        f"{NOW - timedelta(minutes=20):%Y-%m-%d %H:%M:%S} first",
        f"{NOW - timedelta(minutes=20):%Y-%m-%d %H:%M:%S} same second",
        "  at Algorithm.OnData() in main.py:line 42",  # no timestamp: the previous line's
        f"{NOW - timedelta(minutes=25):%Y-%m-%d %H:%M:%S} clock went back",  # never backwards
    ]
    out = sink(real, "readme")
    launch = ns(launched) / NS
    out.write([Line(7, "L-doc", "algo", 100 + i, i, text, launch) for i, text in enumerate(texts)])
    out.flush()
    streams = real.entries(selector(job="readme"), *SPAN)
    (labels, entries), *others = [(dict(key), values) for key, values in streams.items()]
    assert others == []
    ours = {"job": "readme", "env": "paper", "project_id": "7", "deploy_id": "L-doc"}
    assert labels.items() >= {**ours, "name": "algo"}.items()
    assert set(labels) - {*ours, "name"} <= {"service_name", "detected_level"}  # Loki's own
    second = ns(NOW - timedelta(minutes=20))
    assert entries == [
        (ns(launched), texts[0]),
        (second + 1, texts[1]),
        (second + 2, texts[2]),
        (second + 3, texts[3]),
        (second + 4, texts[4]),
    ]


def test_identical_repeated_lines_all_survive(real):
    text = f"{NOW - timedelta(minutes=10):%Y-%m-%d %H:%M:%S} heartbeat"
    out = sink(real, "repeat")
    for start in range(0, 600, 200):
        out.write([Line(7, "L-rep", "algo", i, i, text) for i in range(start, start + 200)])
        out.flush()
    query = selector(job="repeat")
    assert real.lines(query, *SPAN) == [text] * 600
    assert real.count(query, *SPAN) == 600


def test_a_line_longer_than_loki_takes_arrives_truncated(real):
    stamp = f"{NOW - timedelta(minutes=10):%Y-%m-%d %H:%M:%S}"
    long = f"{stamp} {'€' * 100_000}"  # 300,020 bytes: over Loki's 262,144
    out = sink(real, "long")
    out.write([Line(7, "L-long", "algo", i, i, t) for i, t in enumerate([long, f"{stamp} next"])])
    out.flush()
    first, second = real.lines(selector(job="long"), *SPAN)
    assert first.endswith(" [qc-tail: truncated from 300020 bytes]")
    assert long.startswith(first.rsplit(" [qc-tail", 1)[0])
    assert second == f"{stamp} next"
    assert (out.truncated, out.dropped) == (1, 0)


# -- the daemon --------------------------------------------------------------------------------

PROJECTS = (11, 22)
START = NOW - timedelta(minutes=60)


def stamped(n: int) -> str:
    """Line ``n``: 30 a second from an hour ago, 200 bytes, so that a group of them is larger
    than the block in which Loki still drops an identical entry."""
    return f"{START + timedelta(seconds=n // 30):%Y-%m-%d %H:%M:%S} e{n} {'x' * 170}"


def daemon_config(tmp_path: Path, emu: Emulator, url: str, job: str) -> Path:
    loki = f'[output.loki]\nurl = "{url}"\nlabels = {{ job = "{job}" }}\n'
    return conftest_daemon_config(tmp_path, emu, more=loki)


@pytest.fixture
def fleet() -> Iterator[Emulator]:
    with Emulator(user_id=USER_ID, api_token=TOKEN, seed=9).start() as emu:
        for project_id in PROJECTS:
            emu.add_project(project_id, f"algo-{project_id}")
            emu.deploy(project_id)
        yield emu


def test_kill_9_after_a_push_before_its_cursor_every_line_counts_once(tmp_path, fleet, real):
    """Loki's answers are held back by a proxy; each run is killed while Loki has a push
    whose answer is held, so its cursor is not saved. Log queries hide a copy of a line,
    ``count_over_time`` counts it: both must find every line exactly once."""
    rng = random.Random(11)
    job = "chaos"
    written = aimed = 0
    with DelayingProxy(real.url, delay=0.5) as proxy:
        path = daemon_config(tmp_path, fleet, proxy.url, job)
        for _ in range(12):
            for project_id in PROJECTS:
                burst = rng.randint(1000, 2500)
                fleet.write(project_id, [stamped(written + i) for i in range(burst)])
                written += burst
                if rng.random() < 0.2:
                    fleet.deploy(project_id)
            fleet.publish()
            proxy.pushed.clear()
            process = subprocess.Popen(
                qc_tail("--config", str(path), "run"),
                env=cli_env(fleet),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            aimed += proxy.pushed.wait(timeout=60)  # Loki has a push; its answer is held
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        result = run(fleet, "--config", str(path), "run", "--once", timeout=180)
        assert result.returncode == 0, result.stderr
        assert "loki_queries_unavailable" not in result.stderr
    assert aimed >= 10, f"only {aimed} kills landed after a push and before its cursor"
    deployments = [(p, d) for p in PROJECTS for d in fleet.deploy_ids(p)]
    assert sum(len(fleet.published(p, d)) for p, d in deployments) == written
    found = {}  # per deployment: lines, log query, metric query, metric query after a flush
    for project_id, deploy_id in deployments:
        query = selector(job=job, deploy_id=deploy_id)
        entries = [e for es in real.entries(query, *SPAN).values() for e in es]
        found[deploy_id] = [fleet.published(project_id, deploy_id), entries]
        found[deploy_id].append(real.count(query, *SPAN))
    real.flush()
    for deploy_id, seen in found.items():
        seen.append(real.count(selector(job=job, deploy_id=deploy_id), *SPAN))
    counts = {d: (len(lines), len(e), *c) for d, (lines, e, *c) in found.items()}
    assert all(c == (c[0],) * 4 for c in counts.values()), counts  # count_over_time
    for expected, entries, *_ in found.values():
        assert [line for _, line in entries] == expected  # log queries, in order
        assert len({ts for ts, _ in entries}) == len(expected)


def test_a_backfill_older_than_a_week_is_refused_per_line_counted_and_reported_once(
    tmp_path, fleet, real
):
    project_id = PROJECTS[0]
    deploy_id = fleet.deploy_ids(project_id)[-1]
    old = NOW - timedelta(days=10)
    backfill = [
        f"{old + timedelta(seconds=i // 10):%Y-%m-%d %H:%M:%S} old {i}" for i in range(6000)
    ]
    recent = [f"{NOW - timedelta(minutes=5):%Y-%m-%d %H:%M:%S} new {i}" for i in range(50)]
    fleet.write(project_id, backfill + recent)
    fleet.publish()
    path = daemon_config(tmp_path, fleet, real.url, "backfill")
    result = run(fleet, "--config", str(path), "run", "--once", timeout=120)
    assert result.returncode == 0, result.stderr
    log = tmp_path / "out" / str(project_id) / f"{deploy_id}.log"
    assert log.read_text().splitlines() == backfill + recent  # the files are not affected
    assert real.lines(selector(job="backfill", deploy_id=deploy_id), *SPAN) == recent
    events = [json.loads(x) for x in result.stderr.splitlines() if '"loki_rejected"' in x]
    assert {e["reason"] for e in events} == {"too old"}
    assert sum(e["entries"] for e in events) == 6000  # counted
    assert [e["level"] for e in events].count("warning") == 1  # reported once
    assert "reject_old_samples" in events[0]["hint"]
    assert len(events) >= 3  # refused push by push, each for its own lines

"""Tests for tailer.metrics: names, counts, and per-project series that come and go."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tailer.cursor import Cursor
from tailer.metrics import Metrics, Tally
from tailer.reader import Batch
from tailer.records import Gap, LineRun

from .conftest import PROJECT, daemon_config, loaded


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def lines(project_id: int, name: str, count: int) -> Batch:
    run = LineRun(project_id, "L-1", name, 0, 0, tuple(f"line {n}" for n in range(count)))
    return Batch(run, None, Cursor(project_id, "L-1"))


def gap(project_id: int, lost: int | None) -> Batch:
    return Batch(None, Gap(project_id, "L-1", "x", lost, 0), Cursor(project_id, "L-1"))


def test_declared_outputs_have_series_at_zero_from_the_start() -> None:
    metrics = Metrics()
    metrics.outputs(["files", "stdout"])

    found = samples(metrics)

    assert found[("qc_tail_lines_total", (("output", "files"),))] == 0
    assert found[("qc_tail_output_lag_lines", (("output", "stdout"),))] == 0
    assert metrics.lines_by_output() == {"files": 0, "stdout": 0}


def test_lines_in_hand_are_lag_until_delivered_then_counted() -> None:
    metrics = Metrics()
    metrics.writing("loki", 40)
    assert samples(metrics)[("qc_tail_output_lag_lines", (("output", "loki"),))] == 40

    metrics.delivered("loki", 40)
    metrics.delivered("loki", 2)

    found = samples(metrics)
    assert found[("qc_tail_output_lag_lines", (("output", "loki"),))] == 0
    assert found[("qc_tail_lines_total", (("output", "loki"),))] == 42
    assert metrics.lines_by_output() == {"loki": 42}


def test_gaps_count_events_and_the_lines_known_lost() -> None:
    metrics = Metrics()

    metrics.batches([gap(1, 500), gap(1, None), lines(1, "a", 3)], gaps=True)
    metrics.batches([gap(1, 7)], gaps=False)  # another pipeline's copy of a gap

    found = samples(metrics)
    assert found[("qc_tail_gaps_total", ())] == 2
    assert found[("qc_tail_gap_lines_total", ())] == 500


def test_a_project_has_one_last_line_series_until_it_is_forgotten() -> None:
    now = [1000.0]
    metrics = Metrics(clock=lambda: now[0])
    metrics.batches([lines(7, "seven", 2), lines(8, "eight", 1)], gaps=True)
    now[0] = 1005.0
    metrics.batches([lines(7, "renamed", 1)], gaps=True)

    found = samples(metrics)
    series = {k: v for k, v in found.items() if k[0] == "qc_tail_last_line_timestamp_seconds"}
    assert series == {
        ("qc_tail_last_line_timestamp_seconds", (("name", "renamed"), ("project_id", "7"))): 1005,
        ("qc_tail_last_line_timestamp_seconds", (("name", "eight"), ("project_id", "8"))): 1000,
    }

    metrics.forget(7)
    metrics.forget(7)  # twice (two pipelines): no error

    names = [k for k in samples(metrics) if k[0] == "qc_tail_last_line_timestamp_seconds"]
    assert names == [
        ("qc_tail_last_line_timestamp_seconds", (("name", "eight"), ("project_id", "8")))
    ]


def test_requests_are_counted_by_endpoint_and_outcome() -> None:
    metrics = Metrics()
    metrics.request("/live/logs/read", "ok")
    metrics.request("/live/logs/read", "ok")
    metrics.request("/live/read", "throttled")
    metrics.exported()

    found = samples(metrics)
    ok = (("endpoint", "/live/logs/read"), ("outcome", "ok"))
    assert found[("qc_tail_api_requests_total", ok)] == 2
    throttled = (("endpoint", "/live/read"), ("outcome", "throttled"))
    assert found[("qc_tail_api_requests_total", throttled)] == 1
    assert found[("qc_tail_export_calls_total", ())] == 1


def test_two_instances_do_not_share_their_counts() -> None:
    one, other = Metrics(), Metrics()
    one.delivered("files", 5)

    assert samples(other).get(("qc_tail_lines_total", (("output", "files"),))) is None


def test_a_tally_keeps_the_counts_of_the_stop_summary_and_no_series() -> None:
    tally = Tally()
    tally.outputs(["files", "loki"])
    tally.writing("files", 3)
    tally.delivered("files", 3)
    tally.batches([lines(7, "seven", 3), gap(7, 2)], gaps=True)
    tally.request("/live/logs/read", "ok")
    assert tally.lines_by_output() == {"files": 3, "loki": 0}
    assert not hasattr(tally, "registry")


def test_prometheus_client_is_loaded_only_by_a_run_that_serves_metrics(emu, tmp_path) -> None:
    emu.deploy(PROJECT)
    emu.write(PROJECT, ["one", "two"])
    emu.publish()
    for served, more in ((False, ""), (True, '[metrics]\nlisten = "127.0.0.1:0"\n')):
        config = str(daemon_config(tmp_path, emu, more=more))
        _, modules = loaded(emu, ("prometheus_client",), "--config", config, "run", "--once")
        assert modules == {"prometheus_client": served}
    [written] = (tmp_path / "out").rglob("*.log")
    assert written.read_text() == "one\ntwo\n"  # by the first run; the second had nothing new

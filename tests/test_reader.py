"""One deployment's reader against the emulator: windows, offsets, trimming, gaps."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.budget import RequestBudget
from tailer.cursor import Cursor
from tailer.emulator import Emulator
from tailer.http import HttpClient
from tailer.prefetch import Prefetcher
from tailer.reader import Batch, DeploymentReader
from tailer.retry import RetryPolicy

from .conftest import PROJECT, TOKEN, USER_ID, stamp


@pytest.fixture
def api(emu: Emulator) -> QcApi:
    return QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=RetryPolicy(max_attempts=3))


def drain(reader: DeploymentReader, end: int | None = None) -> list[Batch]:
    """Read and commit until caught up, as the scheduler would."""
    batches = []
    while (batch := reader.read(end)) is not None:
        reader.commit(batch)
        batches.append(batch)
    return batches


def texts(batches: list[Batch]) -> list[str]:
    return [line.text for batch in batches for line in batch.lines]


def gaps(batches: list[Batch]) -> list[int | None]:
    return [batch.gap.lost for batch in batches if batch.gap]


def write(emu: Emulator, first: int, n: int) -> list[str]:
    new = [stamp(i) for i in range(first, first + n)]
    emu.write(PROJECT, new)
    emu.publish()
    return new


def new_reader(api: QcApi, deploy_id: str) -> DeploymentReader:
    reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p")
    reader.probe()
    return reader


def test_windows_stay_below_250_and_advance_by_lines_returned(emu, api):
    deploy_id = emu.deploy(PROJECT)
    expected = write(emu, 0, 1000)
    batches = drain(new_reader(api, deploy_id))
    assert texts(batches) == expected
    assert all(len(batch.lines) <= 249 for batch in batches)
    assert [line.number for b in batches for line in b.lines] == list(range(1000))


def test_the_server_asking_for_smaller_pages_halves_the_window():
    with Emulator(user_id=USER_ID, api_token=TOKEN, max_window=100).start() as emu:
        emu.add_project(PROJECT, "p")
        deploy_id = emu.deploy(PROJECT)
        expected = write(emu, 0, 700)
        small = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN))
        reader = new_reader(small, deploy_id)
        assert texts(drain(reader)) == expected
        assert reader.window == 62  # 249 -> 124 -> 62: each refusal halves it
        assert emu.stats.oversized_windows == 2


def test_trimming_an_earlier_deployment_moves_the_offset_without_duplicates(emu, api):
    emu.deploy(PROJECT)
    write(emu, 0, 500)
    current = emu.deploy(PROJECT)
    first = write(emu, 1000, 300)
    reader = new_reader(api, current)
    assert texts(drain(reader)) == first
    emu.trim(PROJECT, 400)
    later = write(emu, 2000, 50)
    assert texts(drain(reader)) == later


def test_trimming_lines_already_read_realigns_by_content(emu, api):
    deploy_id = emu.deploy(PROJECT)
    read = write(emu, 0, 600)
    reader = new_reader(api, deploy_id)
    assert texts(drain(reader)) == read
    emu.trim(PROJECT, 450)
    later = write(emu, 600, 30)
    batches = drain(reader)
    assert texts(batches) == later
    assert gaps(batches) == []
    assert reader.cursor.trimmed == 450
    assert [line.position for line in batches[0].lines] == list(range(600, 630))


def test_repeated_identical_lines_are_all_delivered(emu, api):
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, ["same"] * 300 + ["other"] + ["same"] * 5)
    emu.publish()
    reader = new_reader(api, deploy_id)
    assert texts(drain(reader)) == ["same"] * 300 + ["other"] + ["same"] * 5
    emu.write(PROJECT, ["same"] * 3)
    emu.publish()
    assert texts(drain(reader)) == ["same"] * 3


def test_realignment_tells_repeated_lines_apart_by_their_neighbours(emu, api):
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(i) for i in range(100)] + ["same"] * 3)
    emu.publish()
    reader = new_reader(api, deploy_id)
    drain(reader)
    emu.trim(PROJECT, 2)
    emu.write(PROJECT, ["same"] * 2)
    emu.publish()
    assert texts(drain(reader)) == ["same"] * 2
    assert reader.cursor.trimmed == 2


def test_lines_trimmed_before_being_read_are_a_gap_then_the_rest_is_exact(emu, api):
    deploy_id = emu.deploy(PROJECT)
    write(emu, 0, 100)
    reader = new_reader(api, deploy_id)
    drain(reader)
    write(emu, 100, 400)
    emu.trim(PROJECT, 300)  # lines 0..299 gone: 100..299 were never read
    batches = drain(reader)
    assert gaps(batches) == [None]  # the latest deployment's size is not knowable
    assert texts(batches) == [stamp(i) for i in range(300, 500)]
    assert batches[0].gap is not None and batches[0].gap.position == 100


def test_a_gap_in_a_finished_deployment_is_counted(emu, api):
    old = emu.deploy(PROJECT)
    write(emu, 0, 100)
    current = emu.deploy(PROJECT)
    write(emu, 1000, 50)
    reader = DeploymentReader(api, Cursor(PROJECT, old), "p", window=50)
    reader.probe()
    end = emu.deployment_offset(PROJECT, current)
    first = reader.read(end)
    assert first is not None and len(first.lines) == 50
    reader.commit(first)
    assert reader.cursor.total == 100  # its successor's offset marks its end
    emu.trim(PROJECT, 80)  # lines 0..79 gone: 50..79 were never read
    batches = drain(reader, emu.deployment_offset(PROJECT, current))
    assert gaps(batches) == [30]
    assert texts(batches) == [stamp(i) for i in range(80, 100)]
    assert reader.cursor.position == 100


def test_a_read_stopped_by_a_limit_is_not_caught_up(emu, api):
    deploy_id = emu.deploy(PROJECT)
    write(emu, 0, 10)
    reader = new_reader(api, deploy_id)
    drain(reader, end=None)
    write(emu, 10, 5)
    assert reader.read(limit=10) is None  # rows past the limit may still be this deployment's
    assert reader.caught_up is False  # so a drain period must not drop it yet
    assert texts(drain(reader)) == [stamp(i) for i in range(10, 15)]
    assert reader.caught_up is True


def test_a_catch_up_keeps_its_prefetched_windows_topped_up(emu):
    """After every window read, the next ones are already asked for: four times the in-flight
    budget (the budget caps what really travels), up to the deployment's end, never fewer
    while more remain."""
    deploy_id = emu.deploy(PROJECT)
    expected = write(emu, 0, 249 * 20)
    api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), budget=RequestBudget(max_in_flight=2))
    reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p", prefetcher=Prefetcher(2))
    reader.probe()
    batches, ahead = [], []
    while (batch := reader.read()) is not None:
        reader.commit(batch)
        batches.append(batch)
        ahead.append(len(reader._ahead))
    assert texts(batches) == expected
    remaining = [len(ahead) - 1 - i for i in range(len(ahead))]  # windows still to read
    assert ahead == [min(8, left) for left in remaining]
    assert emu.stats.by_path["/live/logs/read"] == 1 + len(batches) + 1  # probe, reads, end


CAP = 64 * 1024
"""The answer size cap of the readers below: small, so that small lines can pass it."""


def capped_reader(emu: Emulator, deploy_id: str, **options: object) -> DeploymentReader:
    api = QcApi(
        emu.base_url,
        QcAuth(USER_ID, TOKEN),
        policy=RetryPolicy(max_attempts=3, base=0, cap=0),
        http=HttpClient(max_body=CAP),
    )
    reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p", **options)  # type: ignore[arg-type]
    reader.probe()
    return reader


def test_a_window_over_the_answer_cap_is_halved_until_it_fits(emu):
    """249 lines of 3 KB make an answer of 750 KB, over the cap: the same window asked again
    would be refused again, forever. Halved like a window the server refuses, it fits."""
    deploy_id = emu.deploy(PROJECT)
    big = [f"{stamp(i)} {'x' * 3000}" for i in range(300)]
    emu.write(PROJECT, big)
    emu.publish()
    reader = capped_reader(emu, deploy_id, prefetcher=Prefetcher(2))
    assert texts(drain(reader)) == big
    assert reader.window < 249
    after = write(emu, 1000, 600)  # small lines again: the window grows back once past
    assert texts(drain(reader)) == after
    assert reader.window == 249


def test_a_line_over_the_answer_cap_alone_is_reported_and_skipped_as_a_gap(emu):
    deploy_id = emu.deploy(PROJECT)
    before = write(emu, 0, 10)
    huge = f"{stamp(10)} {'y' * (CAP + 1000)}"
    emu.write(PROJECT, [huge])
    emu.publish()
    after = write(emu, 11, 10)
    reader = capped_reader(emu, deploy_id)
    with capture_logs() as events:
        batches = drain(reader)
    assert texts(batches) == before + after  # everything else, once, in order
    assert gaps(batches) == [1]
    (skipped,) = [event for event in events if event["event"] == "line_too_large"]
    assert (skipped["line"], skipped["position"]) == (10, 10)
    assert reader.cursor.position == 21

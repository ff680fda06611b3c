"""One deployment's reader against the emulator: windows, offsets, trimming, gaps."""

from __future__ import annotations

import threading

import pytest
from structlog.testing import capture_logs

from tailer.api import LogWindow, QcApi
from tailer.auth import QcAuth
from tailer.budget import RequestBudget
from tailer.cursor import Cursor
from tailer.emulator import Emulator
from tailer.errors import AnswerTooLargeError, TransientError
from tailer.export import Exporter
from tailer.export_quota import ExportQuota
from tailer.http import HttpClient
from tailer.prefetch import Prefetcher
from tailer.reader import Batch, DeploymentReader
from tailer.retry import RetryPolicy

from .conftest import PROJECT, TOKEN, USER_ID, VARIANTS, stamp


@pytest.fixture
def pauses() -> list[float]:
    """What the client slept (to wait for a lagging replica, say), instead of sleeping."""
    return []


@pytest.fixture
def api(emu: Emulator, pauses: list[float]) -> QcApi:
    policy = RetryPolicy(max_attempts=3)
    return QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=policy, sleep=pauses.append)


def drain(reader: DeploymentReader, end: int | None = None) -> list[Batch]:
    """Read and commit until caught up, as the scheduler would."""
    batches = []
    while (batch := reader.read(end)) is not None:
        reader.commit(batch)
        batches.append(batch)
    return batches


def drain_patiently(reader: DeploymentReader) -> list[Batch]:
    """As ``drain``, retrying reads that fail for now, as the scheduler would at its next
    poll (a hang guard bounds them)."""
    batches: list[Batch] = []
    for _ in range(1000):
        try:
            batch = reader.read()
        except TransientError:
            reader.rewind()
            continue
        if batch is None:
            return batches
        reader.commit(batch)
        batches.append(batch)
    raise AssertionError("the reader never caught up")


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


@pytest.mark.parametrize("strict", [False, True], ids=["up-to", "smaller-than"])
def test_the_server_asking_for_smaller_pages_halves_the_window(strict):
    """Whichever words the refusal uses ("pages up to 100", "must be smaller than 100")."""
    with Emulator(USER_ID, TOKEN, max_window=100, strict_window=strict).start() as emu:
        emu.add_project(PROJECT, "p")
        deploy_id = emu.deploy(PROJECT)
        expected = write(emu, 0, 700)
        small = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN))
        reader = new_reader(small, deploy_id)
        assert texts(drain(reader)) == expected
        assert reader.window == 62  # 249 -> 124 -> 62: each refusal halves it
        assert emu.stats.oversized_windows == 2


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
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


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
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
    assert reader.cursor.trimmed == (0 if emu.model.absolute else 450)  # renumbered or not
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


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
def test_lines_trimmed_before_being_read_are_a_gap_then_the_rest_is_exact(emu, api):
    deploy_id = emu.deploy(PROJECT)
    write(emu, 0, 100)
    reader = new_reader(api, deploy_id)
    drain(reader)
    write(emu, 100, 400)
    emu.trim(PROJECT, 300)  # lines 0..299 gone: 100..299 were never read
    batches = drain(reader)
    # Renumbered, the latest deployment's size is not knowable; with numbers kept, it is.
    assert gaps(batches) == ([200] if emu.model.absolute else [None])
    assert texts(batches) == [stamp(i) for i in range(300, 500)]
    assert batches[0].gap is not None and batches[0].gap.position == 100 + (gaps(batches)[0] or 0)


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
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
        ahead.append(len(reader._prefetched))
    assert texts(batches) == expected
    remaining = [len(ahead) - 1 - i for i in range(len(ahead))]  # windows still to read
    assert ahead == [min(8, left) for left in remaining]
    # The probe, then one read per window: the last one showed the end, so none after it.
    assert emu.stats.by_path["/live/logs/read"] == 1 + len(batches)


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


# -- answers that lag behind: waited out, never taken for a trim ------------------------------

SAME = "2026-03-01 10:00:00 same"


def test_one_stale_answer_neither_gaps_nor_repeats(emu, api):
    """One answer comes from a replica 20 rows behind: the lines the reader delivered last are
    missing from it. Taken for a trim, it reports a gap and reads the deployment again from
    its first line; it is only waited out."""
    emu.deploy(PROJECT)
    write(emu, 0, 10)
    deploy_id = emu.deploy(PROJECT)
    read = write(emu, 100, 1001)
    reader = new_reader(api, deploy_id)
    assert texts(drain(reader)) == read
    emu.lag(PROJECT, lines=20)
    with capture_logs() as events:
        batches = drain(reader)
    assert (texts(batches), gaps(batches)) == ([], [])
    assert [e["event"] for e in events if e["event"] in ("gap", "realigned")] == []
    later = write(emu, 2000, 10)
    assert texts(drain(reader)) == later
    assert reader.cursor.trimmed == 0


def test_a_stale_answer_inside_repeated_lines_is_not_taken_for_a_trim(emu, api):
    """Inside a run of identical lines a stale answer looks exactly like a trim: the last
    lines delivered read the same 20 rows lower. Realigned there, those 20 rows come again."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(i) for i in range(50)] + [SAME] * 300)
    emu.publish()
    reader = new_reader(api, deploy_id)
    drain(reader)
    emu.lag(PROJECT, lines=20)
    emu.write(PROJECT, [SAME] * 5)
    emu.publish()
    batches = drain(reader)
    assert (texts(batches), gaps(batches)) == ([SAME] * 5, [])
    assert reader.cursor.trimmed == 0


@pytest.mark.parametrize("repeated", [False, True])
def test_a_lagging_replica_that_answers_three_times_in_a_row_is_waited_out(
    emu, api, pauses, repeated
):
    """Three stale answers in a row: the answer and the read that confirms it agree, and so
    does the search's. Lines said gone by an answer that does not even reach the last line
    delivered are acted upon only if a later answer says so too; it does not."""
    deploy_id = emu.deploy(PROJECT)
    lines = [SAME] * 300 if repeated else [stamp(i) for i in range(300)]
    emu.write(PROJECT, [stamp(i) for i in range(1000, 1050)] + lines)
    emu.publish()
    reader = new_reader(api, deploy_id)
    drain(reader)
    emu.lag(PROJECT, lines=20, answers=3)
    new = [SAME] * 5 if repeated else [stamp(i) for i in range(2000, 2005)]
    emu.write(PROJECT, new)
    emu.publish()
    with capture_logs() as events:
        batches = drain(reader)
    assert (texts(batches), gaps(batches)) == (new, [])
    assert pauses == [2.0]  # lines said gone, by three answers: a later one says otherwise
    assert [e["event"] for e in events if e["log_level"] == "warning"] == []
    assert reader.cursor.trimmed == 0


def test_stale_prefetched_windows_are_waited_out(emu):
    """A catch-up with windows read ahead, several of them answered by a lagging replica:
    every line once, no gap."""
    deploy_id = emu.deploy(PROJECT)
    expected = write(emu, 0, 249 * 12)
    api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), budget=RequestBudget(max_in_flight=2))
    reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p", prefetcher=Prefetcher(2))
    reader.probe()
    emu.lags.random(0.3, lines=300, seed=5)
    batches = drain_patiently(reader)
    emu.lags.clear()
    expected += write(emu, 5000, 10)
    batches += drain(reader)
    assert (texts(batches), gaps(batches)) == (expected, [])


# -- trims inside runs of identical lines -----------------------------------------------------


def test_a_trim_inside_a_run_of_identical_lines_is_found_by_the_runs_start(emu, api):
    """The cursor sits inside a run of identical lines when retention removes 111 lines and
    as many are published: the last lines delivered read the same at the unshifted place, so
    the four compared lines alone skip 111 lines in silence. The run's length and the line
    before it place the cursor exactly."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(i) for i in range(200)] + [SAME] * 60)
    emu.publish()
    reader = new_reader(api, deploy_id)
    drain(reader)
    emu.write(PROJECT, [SAME] * 111)
    emu.publish()
    emu.trim(PROJECT, 111)  # the length is as it was: the numbers tell nothing
    emu.write(PROJECT, [stamp(1000)])
    emu.publish()
    batches = drain(reader)
    assert (texts(batches), gaps(batches)) == ([SAME] * 111 + [stamp(1000)], [])
    assert reader.cursor.trimmed == 111


def test_a_trim_inside_a_run_too_long_to_compare_whole_is_found_by_its_anchor(emu, api):
    """As above with a run of 300 lines: too many to compare at every read, so the reader
    compares the line before the run and its first one, 300 lines back, and finds them 111
    rows lower."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(i) for i in range(200)] + [SAME] * 300)
    emu.publish()
    reader = new_reader(api, deploy_id)
    drain(reader)
    emu.write(PROJECT, [SAME] * 111)
    emu.publish()
    emu.trim(PROJECT, 111)
    emu.write(PROJECT, [stamp(1000)])
    emu.publish()
    batches = drain(reader)
    assert (texts(batches), gaps(batches)) == ([SAME] * 111 + [stamp(1000)], [])
    assert reader.cursor.trimmed == 111


def test_a_run_whose_start_was_trimmed_away_ends_in_a_gap_of_unknown_size(emu, api):
    """As above, but retention also took the line before the run and the run's first lines:
    what is left of the run matches anywhere in it. The reader resumes at the highest place
    the cursor can be (no line twice) and says that lines may be lost."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(i) for i in range(100)] + [SAME] * 60)
    emu.publish()
    reader = new_reader(api, deploy_id)
    drain(reader)
    emu.write(PROJECT, [SAME] * 111)
    emu.publish()
    emu.trim(PROJECT, 111)  # the 100 distinct lines and 11 of the run
    emu.write(PROJECT, [stamp(1000)])
    emu.publish()
    batches = drain(reader)
    assert gaps(batches) == [None]
    assert texts(batches) == [SAME] * 100 + [stamp(1000)]  # 11 of the 111 new ones unknowable


def test_a_run_whose_anchor_was_trimmed_and_the_log_now_short_is_placed_by_the_numbers(emu, api):
    """The deployment's first line, then 200 identical lines, all read; retention takes the
    first line and one of the run. The anchor (the line before the run) is gone, so the run
    cannot be placed by content, and the log is now shorter than the lines read. The numbers
    say the lines moved two rows at least: the reader resumes there, the highest place they
    can be, with a gap of unknown size, rather than at the first row left, which would
    deliver 199 lines twice."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(100)] + [SAME] * 200)
    emu.publish()
    reader = new_reader(api, deploy_id)
    assert len(texts(drain(reader))) == 201
    emu.trim(PROJECT, 2)
    batches = drain_patiently(reader)
    assert (gaps(batches), texts(batches)) == ([None], [])
    emu.write(PROJECT, [stamp(101)])
    emu.publish()
    assert texts(drain(reader)) == [stamp(101)]


def read_to(reader: DeploymentReader, limit: int) -> list[Batch]:
    """Read and commit up to the project-wide line ``limit``."""
    batches = []
    while (batch := reader.read(limit=limit)) is not None:
        reader.commit(batch)
        batches.append(batch)
    return batches


def test_a_trim_inside_a_long_run_is_predicted_from_the_length(emu, api, pauses):
    """A run longer than the reader looks back, from the deployment's first line: content
    cannot place the cursor, but the length dropped by 111 with the offset at 0: at least 111
    of its rows went. The reader resumes 111 rows lower and, unable to be sure no more went,
    reports a gap of unknown size rather than skip in silence; no line comes twice."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [SAME] * 1800)
    emu.publish()
    reader = new_reader(api, deploy_id)
    assert texts(read_to(reader, 1500)) == [SAME] * 1500
    emu.trim(PROJECT, 111)
    batches = drain(reader)
    assert pauses == [2.0]  # the numbers alone, as a lagging replica's: confirmed later
    assert gaps(batches) == [None]
    assert texts(batches) == [SAME] * 300
    assert reader.cursor.trimmed == 111


def test_a_run_from_the_deployments_first_line_cannot_be_placed_so_a_gap_says_so(emu, api):
    """Four identical lines, the deployment's first, were read; one more and a different one
    come, and retention takes two lines. What is served reads ``same same same other``: the
    cursor's lines may end at the second row (one line of the run trimmed) or at the first
    (two trimmed, the third row new). The highest place loses no line twice, but whether one
    was skipped cannot be told: a gap of unknown size, not silence."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [SAME] * 4)
    emu.publish()
    reader = new_reader(api, deploy_id)
    drain(reader)
    emu.write(PROJECT, [SAME, stamp(1)])
    emu.publish()
    emu.trim(PROJECT, 2)
    batches = drain(reader)
    assert (gaps(batches), texts(batches)) == ([None], [stamp(1)])


# -- what the API's documentation leaves open ---------------------------------------------------


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
def test_an_idle_reader_at_the_end_reads_nothing_new_without_failing(emu, api):
    """A read at or past the end may be refused as out of range: that is "nothing new"."""
    deploy_id = emu.deploy(PROJECT)
    empty = new_reader(api, deploy_id)  # a project without a single row yet
    assert (empty.length, empty.offset) == (0, 0)
    assert empty.read() is None and empty.caught_up
    write(emu, 0, 30)
    at_end = DeploymentReader(api, Cursor(PROJECT, deploy_id, position=30), "p")  # -n 0
    at_end.probe()
    for _ in range(3):
        assert at_end.read() is None and at_end.caught_up
        at_end.rewind()
    assert texts(drain(empty)) == [stamp(i) for i in range(30)]
    for _ in range(3):
        assert empty.read() is None and empty.caught_up
        empty.rewind()
    later = write(emu, 30, 5)
    assert texts(drain(at_end)) == later
    assert texts(drain(empty)) == later


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
def test_the_offset_asked_again_is_read_at_the_last_row_not_past_it(emu, api):
    old = emu.deploy(PROJECT)
    write(emu, 0, 10)
    current = emu.deploy(PROJECT)
    successor = new_reader(api, current)
    write(emu, 10, 3)
    assert successor.reprobe() == 10
    assert successor.probe().logs == (stamp(12),)  # the last row: never past the end
    assert old != current


@pytest.mark.parametrize("emu", [{"absolute_numbers": True}], indirect=True)
def test_with_numbers_kept_a_trim_past_the_cursor_is_a_counted_gap_never_a_stall(emu, api):
    """Windows below the first row left come back short: the reader says how many lines it
    lost, and reads on from the first row left, however far retention went."""
    deploy_id = emu.deploy(PROJECT)
    write(emu, 0, 10)
    reader = new_reader(api, deploy_id)
    drain(reader)
    write(emu, 10, 990)
    emu.trim(PROJECT, 700)  # 10..699 never read: across three windows
    batches = drain(reader)
    assert gaps(batches) == [690]
    assert texts(batches) == [stamp(i) for i in range(700, 1000)]
    assert [line.number for line in batches[1].lines][:1] == [700]
    assert reader.cursor.position == 1000


def test_the_end_a_lagging_answer_shows_is_not_taken_for_the_end(emu, api):
    """No read asks again what the answer before it said, unless that answer was shorter than
    one before it (a lagging replica's): then the rest is read in the same poll."""
    deploy_id = emu.deploy(PROJECT)
    expected = write(emu, 0, 300)
    reader = new_reader(api, deploy_id)
    first = reader.read()
    assert first is not None and len(first.lines) == 249
    reader.commit(first)
    emu.lag(PROJECT, lines=20)  # the next answer shows the log 20 rows short
    assert texts([first, *drain(reader)]) == expected


def test_a_trim_inside_a_run_from_the_deployments_first_line_is_said_as_a_possible_gap(
    emu, api, pauses
):
    """The deployment's lines so far are one repeated line, and retention, seen at work
    already, takes three more while as many are published: the answer reads exactly as if
    nothing had moved, so three unread lines would be skipped in silence. Where a shift
    cannot be seen, a gap of unknown size is said before the next lines; no line twice."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [SAME] * 10)
    emu.publish()
    reader = new_reader(api, deploy_id)
    drain(reader)
    emu.trim(PROJECT, 2)  # seen: the length fell
    assert texts(drain(reader)) == []
    emu.write(PROJECT, [SAME] * 3)
    emu.publish()
    emu.trim(PROJECT, 3)
    emu.write(PROJECT, [stamp(1)])
    emu.publish()
    batches = drain(reader)
    assert (gaps(batches), texts(batches)) == ([None], [stamp(1)])
    emu.write(PROJECT, [stamp(2)])  # distinct lines from here on: placed, nothing more to say
    emu.publish()
    batches = drain(reader)
    assert (gaps(batches), texts(batches)) == ([], [stamp(2)])


def test_a_trim_by_a_longer_repeating_pattern_is_said_as_a_possible_gap(emu, api):
    """Five lines logged over and over: the four compared read the same five rows lower.
    Retention, seen at work already, takes one round of five while as many are published:
    the answer reads as if nothing had moved. The lines compared also read the same further
    down, so a gap of unknown size is said before the next lines."""
    pattern = [stamp(i) for i in range(5)]
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, pattern * 4)
    emu.publish()
    reader = new_reader(api, deploy_id)
    drain(reader)
    emu.trim(PROJECT, 2)  # seen, and placed by content
    assert drain(reader) == []
    emu.write(PROJECT, [*pattern, stamp(99)])
    emu.publish()
    emu.trim(PROJECT, 5)
    batches = drain(reader)
    assert (gaps(batches), texts(batches)) == ([None], [stamp(99)])


def test_a_repeated_run_where_retention_was_never_seen_is_delivered_without_a_gap(emu, api):
    """The doubt is said only where retention acts on the deployment: a young project that
    logs one line over and over gets no gap at every publication."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [SAME] * 10)
    emu.publish()
    reader = new_reader(api, deploy_id)
    drain(reader)
    emu.write(PROJECT, [SAME] * 3)
    emu.publish()
    batches = drain(reader)
    assert (gaps(batches), texts(batches)) == ([], [SAME] * 3)


@pytest.mark.parametrize("read", [0, 100], ids=["none-read", "some-read"])
@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
def test_a_reader_resumed_from_disk_takes_no_older_deployments_trim_for_its_own(emu, api, read):
    """A reader built from a saved cursor knows no offset until its first answer. Retention
    took rows of an older deployment: with numbers kept, the first window (placed as if
    the deployment began at line 0) comes back short, and those rows must not be counted as
    this deployment's lost lines."""
    emu.deploy(PROJECT)
    write(emu, 0, 249)
    current = emu.deploy(PROJECT)
    lines = write(emu, 1000, read)
    saved = drain(new_reader(api, current))[-1].cursor if read else Cursor(PROJECT, current)
    lines += write(emu, 2000, 249)
    emu.trim(PROJECT, 150)  # the older deployment's first rows, past the cursor's number
    batches = drain(DeploymentReader(api, saved, "p"))  # as a restart builds it: no probe
    assert gaps(batches) == []
    assert texts(batches) == lines[read:]
    assert batches[0].lines[0].number == emu.deployment_offset(PROJECT, current) + read


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
def test_a_resumed_reader_of_a_superseded_deployment_without_lines_finds_no_gap(emu, api):
    """As above, for a deployment that never had a line, between two that did: the rows the
    first window lacks are the older deployment's, and nothing of this one was lost."""
    emu.deploy(PROJECT)
    write(emu, 0, 249)
    empty = emu.deploy(PROJECT)
    current = emu.deploy(PROJECT)
    write(emu, 1000, 249)
    emu.trim(PROJECT, 1)
    reader = DeploymentReader(api, Cursor(PROJECT, empty), "p")  # resumed: no probe
    assert drain(reader, emu.deployment_offset(PROJECT, current)) == []
    assert reader.cursor.position == 0


# -- issue 12 hole 7: trims no content can see ------------------------------------------------

YEAR = 365 * 86400
LAUNCHED = 1_000_000.0  # a fixed launch time: the readers below are given their own clock


def aged_reader(api: QcApi, deploy_id: str, age: float) -> DeploymentReader:
    """A reader of a deployment launched ``age`` seconds before the reader's (fixed) clock."""
    cursor = Cursor(PROJECT, deploy_id, launched=LAUNCHED)
    reader = DeploymentReader(api, cursor, "p", clock=lambda: LAUNCHED + age)
    reader.probe()
    return reader


def balanced_trim_in_a_run(emu: Emulator, reader: DeploymentReader) -> list[Batch]:
    """Ten identical lines from the deployment's first one are read; then three more are
    published and retention takes three (the length is unchanged, the rows read the same),
    and a distinct line comes."""
    emu.write(PROJECT, [SAME] * 10)
    emu.publish()
    drain(reader)
    emu.write(PROJECT, [SAME] * 3)
    emu.publish()
    emu.trim(PROJECT, 3)
    emu.write(PROJECT, [stamp(1)])
    emu.publish()
    return drain(reader)


def test_a_first_trim_of_a_deployment_older_than_a_year_is_said_as_a_possible_gap(emu, api):
    """Retention removes lines older than a year as well as past the most rows: a deployment
    launched more than a year ago may lose its first lines at any publication, though none
    was seen to go yet and the project is small. Its first balanced trim, inside a run of
    identical lines from its first line, reads exactly as if nothing moved: a possible gap
    is said before the new lines, never silence."""
    reader = aged_reader(api, emu.deploy(PROJECT), age=YEAR + 86400)
    batches = balanced_trim_in_a_run(emu, reader)
    assert (gaps(batches), texts(batches)) == ([None], [stamp(1)])


def test_a_first_trim_of_a_young_deployment_is_invisible_to_the_reader(emu, api):
    """The documented limit: a deployment younger than a year, in a project below the most
    rows, cannot lose lines to retention as documented. Should it all the same (here the
    emulator trims at will), its first balanced trim inside a run of identical lines from the
    deployment's first line gives answers identical to a history without any trim (three of
    the run fewer from the start): no reader can tell them apart, and a gap said here would be
    said at every new line of every young run. The lines are skipped without a gap."""
    trimmed = emu.deploy(PROJECT)
    reader = aged_reader(api, trimmed, age=30 * 86400)
    batches = balanced_trim_in_a_run(emu, reader)
    assert (gaps(batches), texts(batches)) == ([], [stamp(1)])
    assert emu.trimmed(PROJECT, trimmed) == 3  # three unread lines went, unsaid
    with Emulator(user_id=USER_ID, api_token=TOKEN).start() as other:  # no trim at all
        other.add_project(PROJECT, "p")
        other.deploy(PROJECT)
        other.write(PROJECT, [SAME] * 10 + [stamp(1)])
        other.publish()
        assert other.visible(PROJECT) == emu.visible(PROJECT)


HEARTBEAT = "heartbeat"


def catch_up_into_a_run(emu: Emulator, reader: DeploymentReader, rest: list[str]) -> list[Batch]:
    """Ten identical lines from the deployment's first are read, retention is seen to take
    two, then a catch-up begins (1,200 more of them and ``rest``): its first window read."""
    emu.write(PROJECT, [SAME] * 10)
    emu.publish()
    drain(reader)
    emu.trim(PROJECT, 2)  # seen: the length fell
    assert texts(drain(reader)) == []
    emu.write(PROJECT, [SAME] * 1200 + rest)
    emu.publish()
    batches: list[Batch] = []
    while sum(batch.count for batch in batches) < 249:  # the catch-up's first window
        batch = reader.read()
        assert batch is not None
        reader.commit(batch)
        batches.append(batch)
    return batches


@pytest.mark.parametrize(
    ("rest", "published"),
    [
        ([stamp(1)], [stamp(i) for i in range(2, 7)]),
        ([stamp(1)] + [HEARTBEAT] * 300, [HEARTBEAT] * 5),  # the log ends in a run, too
    ],
    ids=["distinct-end", "repeated-end"],
)
@pytest.mark.parametrize("ahead", [0, 2], ids=["one-by-one", "prefetched"])
def test_a_trim_between_two_windows_of_a_catch_up_inside_a_run_is_said_as_a_possible_gap(
    emu, api, ahead, rest, published
):
    """Retention acts on the deployment (a trim was seen); a catch-up reads through a run of
    identical lines from its first line, and between two of its windows a publication lands
    and retention takes as many rows: the next window's first rows read as the last lines
    delivered, though five unread lines went. The possible gap said when the catch-up began
    does not cover them: the log's last rows (or, where they repeat, the row where their
    repetition begins) moved, so one is said again, before the lines that follow. Windows
    read ahead may show the log before the trim or after it, whichever: the same."""
    deploy_id = emu.deploy(PROJECT)
    prefetcher = Prefetcher(ahead) if ahead else None
    reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p", prefetcher=prefetcher)
    reader.probe()
    assert gaps(catch_up_into_a_run(emu, reader, rest)) == [None]  # said as it begins
    emu.write(PROJECT, published)
    emu.publish()
    emu.trim(PROJECT, 5)
    later = drain(reader)
    assert gaps(later) == [None]
    assert later[0].gap is not None  # before any line read after the trim
    assert texts(later)[-len(rest) - 5 :] == rest + published


def test_a_trim_between_two_windows_where_the_whole_log_is_one_line_is_invisible(emu, api):
    """The documented limit within a catch-up: the whole log served is one line repeated;
    a publication of five more of it, balanced by a trim, leaves every row, the length and
    the offset as they were, so nothing tells that five unread lines went. The gap said as
    the catch-up began is the only one."""
    deploy_id = emu.deploy(PROJECT)
    reader = new_reader(api, deploy_id)
    assert gaps(catch_up_into_a_run(emu, reader, [])) == [None]
    before = emu.visible(PROJECT)
    emu.write(PROJECT, [SAME] * 5)
    emu.publish()
    emu.trim(PROJECT, 5)
    assert emu.visible(PROJECT) == before
    later = drain(reader)
    assert gaps(later) == []
    assert reader.cursor.position == 1210  # five fewer than the 1,215 lines logged


def test_at_the_retention_cap_a_catch_up_with_nothing_published_reads_the_end_per_group(
    emu: Emulator, api: QcApi
) -> None:
    """At 100,000 rows retention acts, and a window needs the rows below it read afresh only
    if a publication landed since the window before it. Where none did, one read of the log's
    end per group of windows says so: far fewer reads than one more a window."""
    deploy_id = emu.deploy(PROJECT)
    lines = [stamp(i) for i in range(100_000)]
    emu.write(PROJECT, lines)
    emu.publish()
    reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p", prefetcher=Prefetcher(4))
    reader.probe()
    asked = emu.stats.by_path["/live/logs/read"]
    assert texts(drain(reader)) == lines
    windows = -(-(len(lines) - 249) // (249 - 4)) + 1  # each overlaps the last by 4 rows
    reads = emu.stats.by_path["/live/logs/read"] - asked
    assert windows <= reads <= 1.25 * windows, (reads, windows)


def test_at_the_retention_cap_the_end_is_read_before_the_first_window_is_asked(
    emu: Emulator, api: QcApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A window asked before the first read of the log's end cannot be told quiet, and the
    one after it would be checked by one more read: the end is read first, then the first
    window is asked with those ahead of it."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(i) for i in range(100_000)])
    reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p", prefetcher=Prefetcher(4))
    reader.probe()
    answers: list[tuple[int, LogWindow]] = []
    read_logs = api.read_logs

    def spied(project_id: int, deploy_id: str, start: int, end: int, **kw: bool) -> LogWindow:
        answers.append((start, read_logs(project_id, deploy_id, start, end, **kw)))
        return answers[-1][1]

    monkeypatch.setattr(api, "read_logs", spied)
    drain(reader)
    first = next(window for start, window in answers if start == 0)
    end = next(window for start, window in answers if start == 100_000 - 249)
    assert end.answered < first.asked


def test_at_the_retention_cap_a_catch_up_after_a_possible_gap_still_reads_the_end_per_group(
    emu: Emulator, api: QcApi
) -> None:
    """As above, but the last lines delivered repeat, so the catch-up begins with a possible
    gap. After it a window needs checking only if a publication landed since: where none
    did, the reads of the log's end per group say so, not one more read a window."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(i) for i in range(5)] * 20)
    reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p", prefetcher=Prefetcher(4))
    drain(reader)
    lines = [stamp(1000 + i) for i in range(100_000 - 100)]
    emu.write(PROJECT, lines)
    asked = emu.stats.by_path["/live/logs/read"]
    batches = drain(reader)
    assert (gaps(batches), texts(batches)) == ([None], lines)
    windows = -(-(len(lines) + 4 - 249) // (249 - 4)) + 1  # each overlaps the last by 4 rows
    reads = emu.stats.by_path["/live/logs/read"] - asked
    assert windows <= reads <= 1.25 * windows, (reads, windows)


def test_at_the_retention_cap_a_catch_up_read_from_an_export_asks_no_window_beside_it(
    emu: Emulator, api: QcApi
) -> None:
    """At 100,000 rows retention acts, and a catch-up reads a large backlog from an export:
    one snapshot, in which nothing is published between two windows, and which holds the
    rows below each. Its windows need no read of the API to be checked: a few reads in all,
    not one a window."""
    deploy_id = emu.deploy(PROJECT)
    lines = [stamp(i) for i in range(100_000)]
    emu.write(PROJECT, lines)
    exporter = Exporter(api, ExportQuota(30), threshold=1000)
    reader = DeploymentReader(
        api, Cursor(PROJECT, deploy_id), "p", prefetcher=Prefetcher(4), exporter=exporter
    )
    reader.probe()
    asked = emu.stats.by_path["/live/logs/read"]
    assert texts(drain(reader)) == lines
    assert exporter.calls == 1
    assert emu.stats.by_path["/live/logs/read"] - asked < 10  # 409 windows


PATTERN = [stamp(i) for i in range(5)]


def lost_before_a_gap(batches: list[Batch], logged: list[str]) -> list[str]:
    """The lines of ``logged`` missing from ``batches``, which must say a gap of unknown size
    before the place they are missing from, and deliver the rest once, in order."""
    delivered: list[str] = []
    gap_at: int | None = None
    for batch in batches:
        if batch.gap is not None and gap_at is None:
            assert batch.gap.lost is None
            gap_at = len(delivered)
        delivered.extend(line.text for line in batch.lines)
    at = next((i for i, (a, b) in enumerate(zip(delivered, logged, strict=False)) if a != b), None)
    if at is None:
        assert logged[: len(delivered)] == delivered
        return logged[len(delivered) :]
    skipped = next(n for n in range(1, len(logged)) if logged[at + n :] == delivered[at:])
    assert gap_at is not None and gap_at <= at, (gap_at, at)
    return logged[at : at + skipped]


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_a_publication_between_windows_read_ahead_at_the_cap_brings_their_checks_back(
    emu: Emulator, api: QcApi, workers: int
) -> None:
    """Retention acts (a trim was seen), and a catch-up reads through five lines logged over
    and over, windows read ahead. Between two of its windows a publication lands and
    retention takes as many rows: a window read after it shows the four lines compared
    where they were, though five unread lines went. The reads of the log's end made between
    windows show the publication, so the windows around it are checked again, and a gap of
    unknown size is said before the lines that went missing."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, PATTERN * 20)
    emu.publish()
    reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p", prefetcher=Prefetcher(workers))
    drain(reader)
    emu.trim(PROJECT, 2)  # seen: the length fell
    assert texts(drain(reader)) == []
    rest = [stamp(1000 + i) for i in range(300)]
    emu.write(PROJECT, PATTERN * 6000 + rest)
    emu.publish()
    batches: list[Batch] = []
    while sum(batch.count for batch in batches) < 4 * 249:  # a few windows in
        batch = reader.read()
        assert batch is not None
        reader.commit(batch)
        batches.append(batch)
    published = [*PATTERN, stamp(99)]
    emu.write(PROJECT, published)
    emu.publish()
    emu.trim(PROJECT, 5)
    batches += drain(reader)
    logged = PATTERN * 6000 + rest + published
    assert lost_before_a_gap(batches, logged) in rotations(PATTERN)


def rotations(pattern: list[str]) -> list[list[str]]:
    return [pattern[i:] + pattern[:i] for i in range(len(pattern))]


@pytest.mark.parametrize("workers", [1, 4])
def test_a_publication_that_repeats_the_logs_last_rows_at_the_cap_is_not_kept_silent(
    emu: Emulator, api: QcApi, workers: int
) -> None:
    """At 100,000 rows retention acts, and a catch-up reads from unique lines into five
    lines logged over and over, up to a block that ends the log (a few lines, then more of
    the five). Between two of its windows a publication brings that same block again, and
    retention takes as many rows: the log's last rows read as they did, and every row moved
    down by a multiple of five, so a window read after it shows the lines compared where
    they were, though the block's length of unread lines went. The lines compared repeat in
    the rows below them: a gap of unknown size is said before the lines that went missing,
    never none."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(9000 + i) for i in range(100)])
    reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p", prefetcher=Prefetcher(workers))
    drain(reader)
    unique = [stamp(5000 + i) for i in range(1000)]
    block = ["report begins", "a", "b", "c", "report ends", *PATTERN * 60]
    repeated = PATTERN * ((100_000 - 100 - len(unique) - len(block)) // len(PATTERN))
    emu.write(PROJECT, unique + repeated + block)
    assert emu.length(PROJECT) == 100_000  # at the cap: a publication trims as much
    batches: list[Batch] = []
    while sum(batch.count for batch in batches) < 8 * 249:  # into the five lines repeated
        batch = reader.read()
        assert batch is not None
        reader.commit(batch)
        batches.append(batch)
    emu.write(PROJECT, block)
    batches += drain(reader)
    logged = unique + repeated + block + block
    assert len(lost_before_a_gap(batches, logged)) == len(block)


def test_at_the_retention_cap_a_possible_gap_said_asks_no_checks_it_will_not_use(
    emu: Emulator, api: QcApi
) -> None:
    """A catch-up of one repeated line from the deployment's first, at 100,000 rows: a
    possible gap is said once; after it, a window is checked only after a publication, so
    no check is asked beside each (it would go unused)."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, [SAME] * 100_000)
    emu.publish()
    reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p", prefetcher=Prefetcher(4))
    reader.probe()
    asked = emu.stats.by_path["/live/logs/read"]
    batches = drain(reader)
    assert len(texts(batches)) == 100_000 and gaps(batches) == [None]
    windows = -(-(100_000 - 249) // (249 - 4)) + 1
    reads = emu.stats.by_path["/live/logs/read"] - asked
    assert reads < 1.5 * windows, (reads, windows)  # a check beside each would be two a window


def test_at_the_retention_cap_a_server_that_refuses_the_window_still_reads_the_end_per_group(
    pauses: list[float],
) -> None:
    """A server whose window limit is below 249 rows refuses the first window of a catch-up
    at 100,000 rows (the window is halved until it is served). The read of the log's end
    made before that window is asked is refused likewise: it is made in fewer rows, so the
    windows are still told quiet per group, not checked by one more read each."""
    with Emulator(user_id=USER_ID, api_token=TOKEN, seed=7, max_window=100).start() as emu:
        emu.add_project(PROJECT, "mean-reversion")
        api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=RetryPolicy(max_attempts=3))
        deploy_id = emu.deploy(PROJECT)
        lines = [stamp(i) for i in range(100_000)]
        emu.write(PROJECT, lines)
        reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p", prefetcher=Prefetcher(4))
        reader.probe()
        asked = emu.stats.by_path["/live/logs/read"]
        assert texts(drain(reader)) == lines
        windows = -(-(len(lines) - reader.window) // (reader.window - 4)) + 1
        reads = emu.stats.by_path["/live/logs/read"] - asked
        assert windows <= reads <= 1.25 * windows, (reads, windows)


def large_lines_at_the_cap(emu: Emulator) -> tuple[QcApi, DeploymentReader, list[str]]:
    """100,000 rows with 400 lines too large for one window under a 100 KB answer cap, a
    reader with read-ahead (probed), and the lines."""
    http = HttpClient(max_body=100_000)
    api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=RetryPolicy(max_attempts=3), http=http)
    deploy_id = emu.deploy(PROJECT)
    lines = [stamp(i) for i in range(100_000)]
    lines[40_000:40_400] = [stamp(i) + " " + "x" * 1000 for i in range(40_000, 40_400)]
    emu.write(PROJECT, lines)
    reader = DeploymentReader(api, Cursor(PROJECT, deploy_id), "p", prefetcher=Prefetcher(4))
    reader.probe()
    return api, reader, lines


def drain_counting_failures(reader: DeploymentReader) -> tuple[list[str], int]:
    """Every line, as polls would read them: a read that fails (the window narrowed) is
    rewound and read again. The lines, and how many reads failed."""
    failed = 0
    delivered: list[str] = []
    for _ in range(1000):  # a hang guard
        try:
            batch = reader.read()
        except AnswerTooLargeError:
            failed += 1
            reader.rewind()
            continue
        if batch is None:
            break
        reader.commit(batch)
        delivered.extend(line.text for line in batch.lines)
    return delivered, failed


def test_at_the_retention_cap_read_ahead_goes_on_past_lines_too_large_for_a_window(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 100,000 rows, a catch-up meets 400 lines too large for one window under the answer
    size cap: the window is narrowed while it reads them (windows are read ahead at that
    width), then restored. The windows read ahead at the narrow width are not those read
    asks from there on: read-ahead goes on at the restored width, not one window at a time
    for the rest of the catch-up (some 240 windows)."""
    api, reader, lines = large_lines_at_the_cap(emu)
    here: list[int] = []  # windows read by the reader itself, not ahead of it
    read_logs = api.read_logs
    reader_thread = threading.current_thread()

    def spied(project_id: int, deploy_id: str, start: int, end: int, **kw: bool) -> LogWindow:
        if threading.current_thread() is reader_thread and not kw.get("fresh"):
            here.append(start)
        return read_logs(project_id, deploy_id, start, end, **kw)

    monkeypatch.setattr(api, "read_logs", spied)
    delivered, _ = drain_counting_failures(reader)
    assert delivered == lines
    assert len([start for start in here if start > 41_000]) < 10, here


def test_at_the_retention_cap_lines_too_large_for_a_window_fail_no_read(emu: Emulator) -> None:
    """As above: the window narrows for the large lines. The check of the rows below a
    window restored past them reads fewer rows where they are too large for one answer,
    as the next read would: no read fails on the way (a failed poll costs the next poll's
    wait and a warning)."""
    _, reader, lines = large_lines_at_the_cap(emu)
    assert drain_counting_failures(reader) == (lines, 0)

"""The files output: one raw file per deployment, durable, cut back on failure, rotatable."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import resource
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from unittest.mock import ANY

import pytest
from structlog.testing import capture_logs

from tailer.cursor import Cursor
from tailer.errors import OutputError, StateError
from tailer.pipeline import Pipeline
from tailer.reader import Batch
from tailer.records import Gap, Line, LineRun
from tailer.sinks.files import FileSink
from tailer.sinks.recovery import FileMark
from tailer.sinks.stdout import StdoutSink

from .conftest import fill

PROJECT = 777


def texts(tag: str, n: int, start: int = 0, width: int = 0) -> list[str]:
    """``n`` distinct log lines, each padded to at least ``width`` characters."""
    return [
        f"2026-03-01 00:00:{i % 60:02d} {tag} {i}".ljust(width, ".")
        for i in range(start, start + n)
    ]


def lines(deploy_id: str, new: list[str], start: int = 0, project_id: int = PROJECT) -> list[Line]:
    return [
        Line(project_id, deploy_id, "algo", number=start + i, position=start + i, text=text)
        for i, text in enumerate(new)
    ]


def raw(new: list[str]) -> bytes:
    return "".join(f"{text}\n" for text in new).encode()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def sink(out) -> Iterator[FileSink]:
    files = FileSink(out)
    yield files
    files.close()


# -- layout, content, modes ------------------------------------------------------------------


def test_lines_of_each_deployment_go_to_their_own_file_raw_and_in_order(out, sink):
    a, b, c = texts("a", 5), texts("b", 4), texts("c", 2)
    a_lines, b_lines = lines("L-a", a), lines("L-b", b)
    records = [
        *a_lines[:2],
        *b_lines[:1],
        Gap(PROJECT, "L-a", "algo", lost=3, position=2),
        *a_lines[2:],
        *b_lines[1:],
        *lines("L-c", c, project_id=778),
    ]
    sink.write(records)
    sink.flush()
    assert (out / "777" / "L-a.log").read_bytes() == raw(a)
    assert (out / "777" / "L-b.log").read_bytes() == raw(b)
    assert (out / "778" / "L-c.log").read_bytes() == raw(c)
    assert sink.path(PROJECT, "L-a") == out / "777" / "L-a.log"


def test_lines_are_written_byte_for_byte(out, sink):
    odd = ["", "  leading and trailing  ", "tab\there", "café ✓ 日本", "C:\\new\\table"]
    sink.write(lines("L-a", odd))
    sink.flush()
    assert sink.path(PROJECT, "L-a").read_bytes() == raw(odd)


def test_a_row_holding_a_line_break_or_controls_stays_one_line(out, sink):
    """An algorithm (or anything it logs) cannot forge a line of its own, or of qc-tail's."""
    hostile = ["a\n2026-03-01 09:30:00 Order filled", "cr\r", "\x1b[31mred\x1b[0m", "nel\x85x"]
    sink.write(lines("L-a", ["before", *hostile, "after"]))
    sink.flush()
    written = sink.path(PROJECT, "L-a").read_bytes()
    assert written.decode().split("\n") == [
        "before",
        "a\\n2026-03-01 09:30:00 Order filled",
        "cr\\r",
        "\\x1b[31mred\\x1b[0m",
        "nel\\x85x",
        "after",
        "",
    ]


def test_later_batches_and_later_runs_append(out, sink):
    first, second, third = texts("a", 3), texts("a", 3, start=3), texts("a", 3, start=6)
    sink.write(lines("L-a", first))
    sink.flush()
    sink.write(lines("L-a", second, start=3))
    sink.flush()
    sink.close()
    again = FileSink(out)
    again.write(lines("L-a", third, start=6))
    again.flush()
    again.close()
    assert sink.path(PROJECT, "L-a").read_bytes() == raw(first + second + third)


def test_an_empty_batch_or_a_gap_alone_creates_nothing(out, sink):
    sink.write([])
    sink.write([Gap(PROJECT, "L-a", "algo", lost=None, position=0)])
    sink.flush()
    assert not out.exists()


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_files_are_0640_and_directories_0750_whatever_the_umask(out, umask):
    old = os.umask(umask)
    try:
        sink = FileSink(out)
        sink.write(lines("L-a", texts("a", 1)) + lines("L-b", texts("b", 1), project_id=778))
        sink.flush()
        sink.close()
    finally:
        os.umask(old)
    assert mode(out) == 0o750
    assert mode(out / "777") == 0o750
    assert mode(out / "778") == 0o750
    assert mode(out / "777" / "L-a.log") == 0o640
    assert mode(out / "778" / "L-b.log") == 0o640


# -- positions and recovery ------------------------------------------------------------------


def test_position_before_anything_was_written_is_the_file_as_it_stands(sink):
    assert sink.position(PROJECT, "L-a")[:2] == (0, None)  # no file: nothing to keep
    path = sink.path(PROJECT, "L-a")
    path.parent.mkdir(parents=True)
    path.write_text("someone else's line\n")
    assert sink.position(PROJECT, "L-a")[:2] == (path.stat().st_size, path.stat().st_ino)


def test_a_first_cursor_saved_before_the_first_write_lets_recover_cut_back(sink):
    before = sink.stamp(Cursor(PROJECT, "L-a"))  # what the pipeline saves before writing
    sink.write(lines("L-a", texts("a", 3)))
    sink.flush()  # ... and the process dies before saving the next cursor
    FileSink(sink.directory).recover([before])
    assert sink.path(PROJECT, "L-a").read_bytes() == b""


def test_position_after_flush_is_the_file_size_and_inode(sink):
    sink.write(lines("L-a", texts("a", 3)))
    sink.flush()
    path = sink.path(PROJECT, "L-a")
    assert sink.position(PROJECT, "L-a")[:2] == (path.stat().st_size, path.stat().st_ino)
    assert sink.position(PROJECT, "L-a")[0] == len(raw(texts("a", 3)))


def test_a_finished_deployments_file_is_closed_and_its_cursor_still_stamped(sink):
    """Redeploys come for months: a drained deployment must not keep a descriptor open."""
    fds = len(os.listdir("/proc/self/fd"))
    for n in range(20):
        sink.write(lines(f"L-{n}", texts("a", 3)))
        sink.flush()
        done = sink.stamp(Cursor(PROJECT, f"L-{n}", position=3, done=True))
        assert FileMark.of(done).size == len(raw(texts("a", 3)))
    assert len(os.listdir("/proc/self/fd")) <= fds + 1  # not one more per deployment
    sink.write(lines("L-0", texts("b", 1)))  # a late line after all: the file reopens
    sink.flush()
    assert sink.path(PROJECT, "L-0").read_bytes() == raw(texts("a", 3) + texts("b", 1))


def test_position_counts_only_flushed_lines(sink):
    sink.write(lines("L-a", texts("a", 3)))
    sink.flush()
    flushed = sink.position(PROJECT, "L-a")
    sink.write(lines("L-a", texts("a", 2, start=3), start=3))
    assert sink.position(PROJECT, "L-a") == flushed


def saved_cursor(sink: FileSink, deploy_id: str = "L-a") -> Cursor:
    size, inode, _ = sink.position(PROJECT, deploy_id)
    return FileMark(size, inode).on(Cursor(PROJECT, deploy_id, position=3))


def test_recover_cuts_a_longer_file_back_to_the_saved_size(out, sink):
    first = texts("a", 3)
    sink.write(lines("L-a", first))
    sink.flush()
    cursor = saved_cursor(sink)
    sink.write(lines("L-a", texts("a", 4, start=3), start=3))  # then killed before the save
    sink.flush()
    sink.close()
    path = sink.path(PROJECT, "L-a")
    FileSink(out).recover([cursor])
    assert path.read_bytes() == raw(first)
    assert path.stat().st_ino == FileMark.of(cursor).inode


def test_a_crash_between_write_and_cursor_save_does_not_duplicate_lines(out, sink):
    first, second = texts("a", 3), texts("a", 4, start=3)
    sink.write(lines("L-a", first))
    sink.flush()
    cursor = saved_cursor(sink)
    sink.write(lines("L-a", second, start=3))
    sink.flush()
    sink.close()
    restarted = FileSink(out)
    restarted.recover([cursor])
    restarted.write(lines("L-a", second, start=3))  # read again from the saved cursor
    restarted.flush()
    restarted.close()
    assert sink.path(PROJECT, "L-a").read_bytes() == raw(first + second)


def delivered(sink: FileSink, new: list[str], deploy_id: str = "L-a", **cursor) -> Cursor:
    """Write and flush ``new`` as a deployment's first lines: the cursor then saved."""
    sink.write(lines(deploy_id, new))
    sink.flush()
    return sink.stamp(Cursor(PROJECT, deploy_id, **cursor).advance(new))


def emptied_then_killed(sink: FileSink, after: list[str]) -> tuple[Path, Cursor]:
    """100 lines delivered (the cursor saved then, returned), the file emptied in place,
    ``after`` written and flushed, then a kill before the next save."""
    path = sink.path(PROJECT, "L-a")
    before = delivered(sink, texts("a", 100))
    os.truncate(path, 0)
    sink.write(lines("L-a", after, start=100))
    sink.flush()
    sink.close()
    return path, before


def copied_away_and_back(path: Path) -> None:
    """What a restore, an rsync or ``cp -a`` across file systems does: same bytes, new inode."""
    inode = path.stat().st_ino
    copy = path.with_name("copy")
    shutil.copy2(path, copy)  # made while the original still holds its inode
    copy.replace(path)
    assert path.stat().st_ino != inode


def set_aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.unverified*"))


def test_recover_keeps_a_file_copied_away_and_back(out, sink):
    """The content proves the file: the last delivered line ends where the cursor says."""
    first = texts("a", 1001)
    cursor = delivered(sink, first)
    sink.close()
    path = sink.path(PROJECT, "L-a")
    copied_away_and_back(path)
    with capture_logs() as events:
        FileSink(out).recover([cursor])
    assert path.read_bytes() == raw(first)
    assert set_aside(path) == []
    assert [e for e in events if e["log_level"] == "warning"] == []


def test_recover_cuts_back_a_copied_file_that_holds_lines_written_after_the_save(out, sink):
    first, after = texts("a", 3), texts("a", 4, start=3)
    cursor = delivered(sink, first)
    sink.write(lines("L-a", after, start=3))  # then killed before the cursor was saved
    sink.flush()
    sink.close()
    path = sink.path(PROJECT, "L-a")
    copied_away_and_back(path)
    FileSink(out).recover([cursor])
    assert path.read_bytes() == raw(first)


def test_recover_recognises_a_last_line_holding_control_characters(out, sink):
    """Such a line is written escaped: the cursor knows the line as written, not as read."""
    first = [*texts("a", 2), "Traceback:\n  File main.py\r\n    raise\x1b[0m"]
    cursor = delivered(sink, first)
    sink.write(lines("L-a", ["written after the save"], start=3))
    sink.flush()
    sink.close()
    path = sink.path(PROJECT, "L-a")
    copied_away_and_back(path)
    FileSink(out).recover([cursor])
    assert (
        path.read_bytes()
        == raw(first[:2]) + b"Traceback:\\n  File main.py\\r\\n    raise\\x1b[0m\n"
    )


def test_recover_recognises_a_last_line_holding_newlines_in_a_file_written_unescaped(out, sink):
    """A file and cursor from before rows were escaped: the line spans several file lines."""
    first = [*texts("a", 2), "Traceback:\n  File main.py\n    raise"]
    path = sink.path(PROJECT, "L-a")
    path.parent.mkdir(parents=True)
    path.write_bytes(raw(first) + raw(["written after the save"]))
    stat = path.stat()
    cursor = FileMark(len(raw(first)), stat.st_ino).on(Cursor(PROJECT, "L-a"))
    copied_away_and_back(path)
    FileSink(out).recover([cursor.advance(first)])
    assert path.read_bytes() == raw(first)


def test_a_new_file_whose_last_line_matches_only_by_chance_is_not_cut(out, sink):
    """The file was rotated away; a killed write began a new one, whose second line is the
    same heartbeat as the last line delivered, ending at the very byte the cursor saved.
    Another inode: the line before must match too. Not proven, so nothing is cut."""
    cursor = delivered(sink, [*texts("a", 1), "heartbeat"])
    sink.close()
    path = sink.path(PROJECT, "L-a")
    path.rename(path.with_name(f"{path.name}.1"))
    written = [*texts("b", 1), "heartbeat", "not delivered either"]  # "b 0": as long as "a 0"
    path.write_bytes(raw(written))
    with capture_logs() as events:
        FileSink(out).recover([cursor])
    assert path.read_bytes() == raw(written)
    assert [e["event"] for e in events if e["log_level"] == "warning"] == ["output_unproven"]


def test_recover_sets_aside_a_replaced_file_it_cannot_verify_and_says_so(out, sink):
    cursor = delivered(sink, texts("a", 3))
    sink.close()
    path = sink.path(PROJECT, "L-a")
    replacement = path.with_name("replacement")
    replacement.write_bytes(raw(texts("other", 10)))
    replacement.replace(path)
    restarted = FileSink(out)
    with capture_logs() as events:
        restarted.recover([cursor])
        assert path.read_bytes() == raw(texts("other", 10))  # not one byte cut
        restarted.write(lines("L-a", texts("a", 2, start=3), start=3))  # delivery goes on
    aside = path.with_name("L-a.log.unverified")
    assert set_aside(path) == [aside]
    assert aside.read_bytes() == raw(texts("other", 10))  # all of it, once it differs
    unproven_, moved = [e for e in events if e["log_level"] == "warning"]
    assert unproven_["event"] == "output_unproven" and unproven_["path"] == str(path)
    assert moved["event"] == "output_set_aside"
    assert moved["path"] == str(path) and moved["moved_to"] == str(aside)
    assert str(aside) in moved["hint"] and str(path) in moved["hint"]
    restarted.flush()
    restarted.close()
    assert path.read_bytes() == raw(texts("a", 2, start=3))


def test_a_file_shortened_in_place_is_set_aside_from_where_it_differs_never_extended(out, sink):
    """Cut in place to 30 bytes: the restart cannot tell that from a file emptied and written
    again, so it keeps it until the lines read again show what it holds: not them. Those
    bytes are moved to ``.unverified``; the file is never cut below them, nor stretched."""
    cursor = delivered(sink, texts("a", 3))
    sink.close()
    path = sink.path(PROJECT, "L-a")
    os.truncate(path, 30)
    restarted = FileSink(out)
    restarted.recover([cursor])
    assert path.read_bytes() == raw(texts("a", 3))[:30]
    after = texts("a", 2, start=3)
    with capture_logs() as events:
        restarted.write(lines("L-a", after, start=3))
    restarted.flush()
    assert [p.read_bytes() for p in set_aside(path)] == [raw(texts("a", 3))[:30]]
    assert path.read_bytes() == raw(after)
    assert [e["event"] for e in events if e["log_level"] == "warning"] == ["output_set_aside"]
    assert restarted.position(PROJECT, "L-a")[0] == len(raw(after))


def test_recover_leaves_an_emptied_file_as_it_is(out, sink):
    """``: > file`` or logrotate's ``copytruncate``: nothing is left to cut or to protect."""
    cursor = delivered(sink, texts("a", 3))
    sink.close()
    path = sink.path(PROJECT, "L-a")
    inode = path.stat().st_ino
    os.truncate(path, 0)
    FileSink(out).recover([cursor])
    assert path.read_bytes() == b""
    assert path.stat().st_ino == inode
    assert set_aside(path) == []


def test_recover_after_copytruncate_keeps_what_the_emptied_file_took_since(out, sink):
    """logrotate ``copytruncate``: the file is emptied under qc-tail, which goes on writing
    at its start (O_APPEND), and says so. Saved since: recognised and kept."""
    path = sink.path(PROJECT, "L-a")
    before = delivered(sink, texts("a", 100))
    os.truncate(path, 0)
    after = texts("a", 3, start=100)
    with capture_logs() as events:
        sink.write(lines("L-a", after, start=100))
    sink.flush()
    [warning] = [e for e in events if e["log_level"] == "warning"]
    assert warning["event"] == "output_emptied" and warning["path"] == str(path)
    saved = sink.stamp(before.advance(after))
    sink.close()
    FileSink(out).recover([saved])
    assert path.read_bytes() == raw(after)


@pytest.mark.parametrize("after_lines", [3, 150])  # the file ends below, or past, the old size
def test_a_crash_after_copytruncate_neither_duplicates_nor_sets_aside_the_lines(
    out, sink, after_lines
):
    """Emptied under qc-tail, written, then killed before the cursor was saved: the file
    holds only lines its cursor does not count, shorter than (or not ending where) it says.
    Those lines are read again: matched against the file, they are not written twice, and
    nothing is set aside; the emptying is reported once."""
    after = texts("a", after_lines, start=100)
    path, before = emptied_then_killed(sink, after)
    inode = path.stat().st_ino
    restarted = FileSink(out)
    with capture_logs() as events:
        restarted.recover([before])
    assert [e["event"] for e in events if e["log_level"] == "warning"] == ["output_unproven"]
    assert path.read_bytes() == raw(after)
    assert (
        restarted.position(PROJECT, "L-a")[0] == FileMark.of(before).size
    )  # as saved, till matched
    later = texts("a", 4, start=100 + after_lines)
    restarted.write(lines("L-a", after[:2], start=100))  # read again, a window at a time
    restarted.flush()
    assert restarted.position(PROJECT, "L-a") == (len(raw(after[:2])), inode, ANY)
    restarted.write(lines("L-a", after[2:] + later, start=102))
    restarted.flush()
    restarted.close()
    assert path.read_bytes() == raw(after + later)
    assert path.stat().st_ino == inode
    assert set_aside(path) == []
    assert restarted.position(PROJECT, "L-a")[0] == len(raw(after + later))


@pytest.mark.parametrize("junk", [b"", b"torn line, never a delivered one\n"])
def test_an_emptied_file_rotated_before_the_first_write_is_still_matched(out, sink, junk):
    """Emptied, written, killed before the save; then, after the restart and before any
    line is read again, logrotate's ``create`` renames the file away and sends SIGHUP. The
    lines read again are matched against the renamed file, which holds them: they are not
    written twice into the new one. What it holds past them (a torn write) is moved to
    ``.unverified``, as it would be from the file not renamed."""
    after = texts("a", 5, start=100)
    path, before = emptied_then_killed(sink, after)
    with path.open("ab") as f:
        f.write(junk)
    restarted = FileSink(out)
    restarted.recover([before])
    rotated = path.with_name(f"{path.name}.1")
    path.rename(rotated)
    restarted.reopen()
    later = texts("a", 3, start=105)
    restarted.write(lines("L-a", after[:2], start=100))
    restarted.flush()
    assert restarted.position(PROJECT, "L-a") == (len(raw(after[:2])), rotated.stat().st_ino, ANY)
    restarted.write(lines("L-a", after[2:] + later, start=102))
    restarted.flush()
    restarted.close()
    assert rotated.read_bytes() + path.read_bytes() == raw(after + later)
    assert path.read_bytes() == raw(later)
    assert [p.read_bytes() for p in set_aside(path)] == ([junk] if junk else [])


def test_a_torn_line_completed_while_matching_is_the_last_line_its_cursor_knows(out, sink):
    """The crash tore the file's last line; read again, the line is completed in place. The
    cursor saved then must know that whole line as the file's last (not the bytes that
    completed it), or the next restart would find the file unproven and set it aside."""
    after = texts("a", 5, start=100)
    path, before = emptied_then_killed(sink, after)
    os.truncate(path, len(raw(after)) - 5)  # torn inside its last line
    restarted = FileSink(out)
    restarted.recover([before])
    restarted.write(lines("L-a", after, start=100))
    restarted.flush()
    saved = restarted.stamp(before.advance(after))
    restarted.close()
    again = FileSink(out)
    with capture_logs() as events:
        again.recover([saved])
    again.close()
    assert [e["event"] for e in events if e["log_level"] == "warning"] == []
    assert path.read_bytes() == raw(after)
    assert set_aside(path) == []


def test_a_crash_while_matching_an_emptied_file_resumes_from_the_lines_matched(out, sink):
    """The cursor saved while the lines read again are being matched counts the lines
    matched: a restart then cuts the file back there, like any file, and reads on."""
    after = texts("a", 5, start=100)
    path, before = emptied_then_killed(sink, after)
    restarted = FileSink(out)
    restarted.recover([before])
    restarted.write(lines("L-a", after[:2], start=100))
    restarted.flush()
    saved = restarted.stamp(before.advance(after[:2]))
    restarted.close()
    again = FileSink(out)
    again.recover([saved])
    assert path.read_bytes() == raw(after[:2])
    again.write(lines("L-a", after[2:], start=102))
    again.flush()
    again.close()
    assert path.read_bytes() == raw(after)
    assert set_aside(path) == []


def test_recover_never_overwrites_a_file_set_aside_before(out, sink):
    path = sink.path(PROJECT, "L-a")
    cursor = delivered(sink, texts("a", 3))
    sink.close()
    os.link(path, path.with_name("kept"))  # its inode is not given to a replacement
    for n in range(3):
        replacement = path.with_name("replacement")
        replacement.write_bytes(raw(texts(f"other{n}", 5)))
        replacement.replace(path)
        restarted = FileSink(out)
        restarted.recover([cursor])
        restarted.write(lines("L-a", texts("a", 1, start=3), start=3))
        restarted.close()
    assert [p.name for p in set_aside(path)] == [
        "L-a.log.unverified",
        "L-a.log.unverified.2",
        "L-a.log.unverified.3",
    ]
    assert [p.read_bytes() for p in set_aside(path)] == [
        raw(texts(f"other{n}", 5)) for n in range(3)
    ]


def test_recover_leaves_a_finished_deployments_unverifiable_file_alone(out, sink):
    """Nothing more will be written to it: it is the user's to compress, edit or trim."""
    cursor = delivered(sink, texts("a", 3), done=True)
    sink.close()
    path = sink.path(PROJECT, "L-a")
    path.write_bytes(b"edited by hand\n")
    FileSink(out).recover([cursor])
    assert path.read_bytes() == b"edited by hand\n"
    assert set_aside(path) == []


def test_recover_cuts_back_a_finished_deployments_file_it_can_verify(out, sink):
    first = texts("a", 3)
    cursor = delivered(sink, first, done=True)
    sink.write(lines("L-a", texts("a", 1, start=3), start=3))  # a late line, then killed
    sink.flush()
    sink.close()
    FileSink(out).recover([cursor])
    assert sink.path(PROJECT, "L-a").read_bytes() == raw(first)


def test_recover_after_a_gap_recognises_the_file_by_its_last_line_written(out, sink):
    """A gap empties the cursor's tail, not what it knows of the file."""
    first = texts("a", 3)
    cursor = replace(delivered(sink, first), tail=())
    sink.write(lines("L-a", texts("a", 1, start=3), start=3))
    sink.flush()
    sink.close()
    path = sink.path(PROJECT, "L-a")
    copied_away_and_back(path)
    FileSink(out).recover([cursor])
    assert path.read_bytes() == raw(first)
    assert set_aside(path) == []


def test_recover_without_lines_to_recognise_trusts_only_the_same_file(out, sink):
    """A cursor whose last record was a gap, saved before the file's last line was kept in
    it, has no line to check the file's content by."""
    first = texts("a", 3)
    cursor = replace(delivered(sink, first), tail=())
    cursor = FileMark.of(cursor)._replace(last=None).on(cursor)
    sink.write(lines("L-a", texts("a", 1, start=3), start=3))
    sink.flush()
    sink.close()
    path = sink.path(PROJECT, "L-a")
    FileSink(out).recover([cursor])
    assert path.read_bytes() == raw(first)  # the same inode: cut back as before
    copied_away_and_back(path)
    restarted = FileSink(out)
    restarted.recover([cursor])
    restarted.write(lines("L-a", texts("a", 1, start=3), start=3))
    assert [p.read_bytes() for p in set_aside(path)] == [raw(first)]


def test_recover_without_a_file_creates_nothing(out):
    cursor = FileMark(100, 12345).on(Cursor(PROJECT, "L-a", position=3))
    FileSink(out).recover([cursor])
    assert not out.exists()


@pytest.mark.parametrize("mark", [{"size": "12"}, {"inode": -3}, {"last": 7}, {"size": True}])
def test_a_file_mark_that_is_not_one_is_a_clear_state_error(out, sink, mark):
    """A cursor file edited by hand, read at start or later (a project discovered while
    running): exit 78 naming the deployment, never a traceback nor a guess."""
    cursor = Cursor(PROJECT, "L-a", position=1, marks={"file": mark})
    for use in (lambda: FileSink(out).recover([cursor]), lambda: sink.stamp(cursor)):
        with pytest.raises(StateError) as raised:
            use()
        assert raised.value.exit_code == 78
        assert "L-a" in str(raised.value) and "its file mark is not one" in str(raised.value)
    assert not out.exists()


def test_recover_ignores_a_cursor_without_a_file_size(out, sink):
    sink.write(lines("L-a", texts("a", 3)))
    sink.flush()
    sink.close()
    FileSink(out).recover([Cursor(PROJECT, "L-a", position=3)])
    assert sink.path(PROJECT, "L-a").read_bytes() == raw(texts("a", 3))


# -- symlinks and hostile names --------------------------------------------------------------


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory beside the output directory, holding a file nobody may touch."""
    directory = tmp_path / "outside"
    directory.mkdir()
    directory.chmod(0o755)
    (directory / "precious").write_bytes(b"precious\n")
    (directory / "L-a.log").write_bytes(b"not ours\n")
    return directory


def assert_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["L-a.log", "precious"]
    assert (outside / "precious").read_bytes() == b"precious\n"
    assert (outside / "L-a.log").read_bytes() == b"not ours\n"
    assert mode(outside) == 0o755


def test_a_symlinked_project_directory_is_not_written_through(out, sink, outside):
    out.mkdir()
    (out / "777").symlink_to(outside)
    with pytest.raises((OSError, OutputError)):
        sink.write(lines("L-a", ["injected"]) + lines("L-new", ["injected"]))
        sink.flush()
    assert_untouched(outside)


@pytest.mark.parametrize("target", ["precious", "L-a.log", "missing.log"])
def test_a_symlinked_log_file_is_not_written_through(out, sink, outside, target):
    (out / "777").mkdir(parents=True)
    (out / "777" / "L-a.log").symlink_to(outside / target)
    with pytest.raises((OSError, OutputError)):
        sink.write(lines("L-a", ["injected"]))
        sink.flush()
    assert_untouched(outside)


def test_recover_does_not_cut_a_file_outside_through_a_symlinked_log_file(out, outside):
    (out / "777").mkdir(parents=True)
    (out / "777" / "L-a.log").symlink_to(outside / "precious")
    cursor = FileMark(2, 12345).on(Cursor(PROJECT, "L-a", position=1))
    with contextlib.suppress(OSError, OutputError):
        FileSink(out).recover([cursor])
    assert_untouched(outside)


def test_recover_does_not_cut_a_file_outside_through_a_symlinked_project_directory(out, outside):
    out.mkdir()
    (out / "777").symlink_to(outside)
    cursor = FileMark(2, 12345).on(Cursor(PROJECT, "L-a", position=1))
    with contextlib.suppress(OSError, OutputError):
        FileSink(out).recover([cursor])
    assert_untouched(outside)


HOSTILE_IDS = [
    "../../etc/passwd",
    "../outside/precious",
    "a/b",
    "a\x00b",
    "a\nb",
    "x" * 300,
    "déploiement-日本語-🚀",
    "..",
    ".",
    "",
    "\udcff",
]


@pytest.mark.parametrize("deploy_id", HOSTILE_IDS, ids=repr)
def test_a_hostile_deploy_id_never_escapes_the_directory(tmp_path, out, sink, deploy_id):
    sink.write(lines(deploy_id, ["hello"]))
    sink.flush()
    path = sink.path(PROJECT, deploy_id)
    assert path.parent == out / "777"
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == [path]
    assert path.read_bytes() == b"hello\n"


def test_a_deploy_id_ending_in_a_newline_makes_no_file_name_with_one(out, sink):
    sink.write(lines("L-abc\n", ["hello"]) + lines("L-abc", ["plain"]))
    sink.flush()
    names = sorted(path.name for path in out.rglob("*"))
    assert all(name.isprintable() for name in names), names
    assert len(names) == 3  # the project's directory and two files


def test_hostile_deploy_ids_get_a_file_each(out, sink):
    records = [line for i, d in enumerate(HOSTILE_IDS) for line in lines(d, [f"line {i}"])]
    sink.write(records)
    sink.flush()
    for i, deploy_id in enumerate(HOSTILE_IDS):
        assert sink.path(PROJECT, deploy_id).read_bytes() == f"line {i}\n".encode()


def test_long_deploy_ids_that_differ_only_at_the_end_do_not_share_a_file(sink):
    first, second = "x" * 300, "x" * 299 + "y"
    sink.write(lines(first, ["first"]) + lines(second, ["second"]))
    sink.flush()
    assert sink.path(PROJECT, first).read_bytes() == b"first\n"
    assert sink.path(PROJECT, second).read_bytes() == b"second\n"


# -- a full disk -----------------------------------------------------------------------------


def test_a_full_disk_cuts_every_touched_file_back_and_the_retry_writes_once(tiny_tmpfs):
    sink = FileSink(tiny_tmpfs / "out")
    first_a, first_b = texts("a", 3), texts("b", 3)
    sink.write(lines("L-a", first_a) + lines("L-b", first_b))
    sink.flush()
    flushed_b = sink.position(PROJECT, "L-b")
    fill(tiny_tmpfs / "filler")
    more_a = texts("a", 2, start=3)  # fits in the page the file already has
    more_b = texts("b", 100, start=3, width=100)  # about 10 KB: does not fit
    batch = lines("L-a", more_a, start=3) + lines("L-b", more_b, start=3)

    with pytest.raises(OutputError, match="disk is full") as caught:
        sink.write(batch)
        sink.flush()

    assert str(sink.path(PROJECT, "L-b")) in str(caught.value)
    assert sink.path(PROJECT, "L-a").read_bytes() == raw(first_a)
    assert sink.path(PROJECT, "L-b").read_bytes() == raw(first_b)
    assert sink.position(PROJECT, "L-b") == flushed_b

    (tiny_tmpfs / "filler").unlink()
    sink.write(batch)
    sink.flush()
    sink.close()
    assert sink.path(PROJECT, "L-a").read_bytes() == raw(first_a + more_a)
    assert sink.path(PROJECT, "L-b").read_bytes() == raw(first_b + more_b)


class FullDisk:
    """``os.write`` until armed, then one short write and ENOSPC, as a filling disk does."""

    def __init__(self) -> None:
        self.armed = False

    def __call__(self, fd: int, data: memoryview | bytes) -> int:
        if not self.armed:
            return os.write(fd, data)
        self.armed = False
        written = os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"after {written} bytes")


def test_a_full_disk_after_the_file_was_emptied_cuts_back_to_what_it_held_not_beyond(out):
    """``: > file`` or logrotate's ``copytruncate`` under qc-tail, then a full disk: the
    roll-back must not stretch the file to its old length with zeros."""
    write = FullDisk()
    sink = FileSink(out, write=write)
    sink.write(lines("L-a", texts("a", 100)))
    sink.flush()
    path = sink.path(PROJECT, "L-a")
    os.truncate(path, 0)
    write.armed = True
    more = texts("a", 10, start=100)
    with pytest.raises(OutputError, match="disk is full"):
        sink.write(lines("L-a", more, start=100))
    assert path.read_bytes() == b""  # not 100 lines' worth of NUL bytes
    sink.write(lines("L-a", more, start=100))
    sink.flush()
    assert path.read_bytes() == raw(more)
    assert sink.position(PROJECT, "L-a")[:2] == (len(raw(more)), path.stat().st_ino)


def test_a_full_disk_cuts_a_partly_written_file_back_to_its_flushed_length(out):
    write = FullDisk()
    sink = FileSink(out, write=write)
    first = texts("a", 3)
    sink.write(lines("L-a", first))
    sink.flush()
    write.armed = True
    with pytest.raises(OutputError, match="disk is full"):
        sink.write(lines("L-a", texts("a", 10, start=3), start=3))
    assert sink.path(PROJECT, "L-a").read_bytes() == raw(first)


def test_stdout_behind_files_prints_a_line_once_when_their_fsync_failed(tmp_path, monkeypatch):
    """stdout is exactly-once within a run: it gets a group only after the files flushed it,
    so a group whose fsync failed (an I/O error: a stand-in, no disk here fails on demand),
    retried, is printed once."""
    out = io.StringIO()
    pipeline = Pipeline([FileSink(tmp_path / "out"), StdoutSink(out)])
    new = texts("a", 3)
    group = [Batch(LineRun(PROJECT, "L-a", "p", 0, 0, tuple(new)), None, Cursor(PROJECT, "L-a"))]
    real_fsync = os.fsync
    failures = [OSError(errno.EIO, "Input/output error")]

    def failing_once(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_once)
    with pytest.raises(OutputError):
        pipeline.deliver(group)
    assert out.getvalue() == ""

    pipeline.deliver(group)
    pipeline.close()
    assert out.getvalue().splitlines() == new
    assert (tmp_path / "out" / str(PROJECT) / "L-a.log").read_bytes() == raw(new)


# -- rotation --------------------------------------------------------------------------------


def test_reopen_after_rotation_lets_go_of_the_renamed_file(sink):
    first, second = texts("a", 3), texts("a", 4, start=3)
    path = sink.path(PROJECT, "L-a")
    sink.write(lines("L-a", first))
    sink.flush()
    rotated = path.with_name(path.name + ".1")
    path.rename(rotated)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))  # logrotate `create`
    sink.reopen()
    sink.write(lines("L-a", second, start=3))
    sink.flush()
    assert rotated.read_bytes() == raw(first)
    assert path.read_bytes() == raw(second)
    assert sink.position(PROJECT, "L-a")[:2] == (len(raw(second)), path.stat().st_ino)


def test_until_reopen_lines_follow_the_renamed_file(sink):
    first, second = texts("a", 3), texts("a", 4, start=3)
    path = sink.path(PROJECT, "L-a")
    sink.write(lines("L-a", first))
    sink.flush()
    rotated = path.with_name(path.name + ".1")
    path.rename(rotated)
    sink.write(lines("L-a", second, start=3))
    sink.flush()
    assert rotated.read_bytes() == raw(first + second)
    assert not path.exists()


def test_reopen_creates_the_file_when_rotation_did_not(sink):
    path = sink.path(PROJECT, "L-a")
    sink.write(lines("L-a", texts("a", 3)))
    sink.flush()
    path.rename(path.with_name(path.name + ".1"))
    sink.reopen()
    sink.write(lines("L-a", texts("a", 1, start=3), start=3))
    sink.flush()
    assert path.read_bytes() == raw(texts("a", 1, start=3))
    assert mode(path) == 0o640


@pytest.mark.skipif(
    shutil.which("logrotate") is None,
    reason="logrotate is not installed (the Debian package `logrotate` provides it)",
)
def test_real_logrotate_with_create_loses_and_duplicates_nothing(tmp_path, out, sink):
    path = sink.path(PROJECT, "L-a")
    config = tmp_path / "logrotate.conf"
    config.write_text(f'"{path}" {{\n    rotate 10\n    create 0640\n    nocompress\n}}\n')
    config.chmod(0o644)
    rounds = [texts("a", 5, start=5 * i) for i in range(4)]
    for i, batch in enumerate(rounds):
        sink.write(lines("L-a", batch, start=5 * i))
        sink.flush()
        if i < len(rounds) - 1:
            subprocess.run(
                ["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), str(config)],
                check=True,
                capture_output=True,
            )
            sink.reopen()  # what `postrotate kill -HUP` does
    generations = [path.with_name(f"{path.name}.{n}") for n in (3, 2, 1)] + [path]
    assert [p.read_bytes() for p in generations] == [raw(batch) for batch in rounds]
    assert mode(path) == 0o640


# -- descriptors: at most max_open files open ------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_files_beyond_max_open_are_closed_when_idle_and_reopened_where_they_were(out):
    """Thousands of deployments, most of them quiet: a descriptor each would run out."""
    sink = FileSink(out, max_open=3)
    before = open_fds()
    for n in range(10):
        sink.write(lines(f"L-{n}", texts(f"first {n}", 2)))
        sink.flush()
    assert open_fds() <= before + 3
    cursors = {n: sink.stamp(Cursor(PROJECT, f"L-{n}", position=2)) for n in range(10)}
    for n in range(10):  # every file reopened (most were closed), appended where it was
        sink.write(lines(f"L-{n}", texts(f"second {n}", 1), start=2))
        sink.flush()
        assert open_fds() <= before + 3
    for n in range(10):
        path = sink.path(PROJECT, f"L-{n}")
        assert path.read_bytes() == raw(texts(f"first {n}", 2) + texts(f"second {n}", 1))
        stamped = sink.stamp(cursors[n])
        assert (FileMark.of(stamped).size, FileMark.of(stamped).inode) == (
            path.stat().st_size,
            FileMark.of(cursors[n]).inode,
        )
        assert (
            FileMark.of(stamped).last is not None
            and FileMark.of(stamped).last != FileMark.of(cursors[n]).last
        )
    sink.close()
    again = FileSink(out)  # a restart recognises each file by its cursor: nothing set aside
    again.recover([sink.stamp(cursors[n]) for n in range(10)])
    assert not list(out.glob("*/*.unverified*"))


def test_a_closed_file_keeps_its_cursor_as_it_was(out):
    sink = FileSink(out, max_open=1)
    sink.write(lines("L-a", texts("a", 2)))
    sink.flush()
    kept_open = sink.stamp(Cursor(PROJECT, "L-a", position=2))
    sink.write(lines("L-b", texts("b", 1)))  # L-a closed to make room
    sink.flush()
    assert sink.stamp(Cursor(PROJECT, "L-a", position=2)) == kept_open


def test_a_file_replaced_while_closed_is_taken_as_new_as_after_sighup(out):
    sink = FileSink(out, max_open=1)
    path = sink.path(PROJECT, "L-a")
    sink.write(lines("L-a", texts("a", 3)))
    sink.flush()
    sink.write(lines("L-b", texts("b", 1)))  # L-a closed
    sink.flush()
    rotated = path.with_name(path.name + ".1")
    path.rename(rotated)  # rotated without a SIGHUP
    sink.write(lines("L-a", texts("a", 2, start=3), start=3))
    sink.flush()
    assert rotated.read_bytes() == raw(texts("a", 3))
    assert path.read_bytes() == raw(texts("a", 2, start=3))
    assert sink.position(PROJECT, "L-a")[:2] == (path.stat().st_size, path.stat().st_ino)


def test_files_written_since_the_last_flush_stay_open_beyond_max_open(out):
    """A failed flush must cut each file written back: none of them may be closed first."""
    writes = 0

    def failing_second_round(fd: int, data: memoryview) -> int:
        nonlocal writes
        writes += 1
        if writes > 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)

    sink = FileSink(out, max_open=1, write=failing_second_round)
    records = [*lines("L-a", texts("a", 2)), *lines("L-b", texts("b", 2))]
    sink.write(records)
    sink.flush()
    more = [
        *lines("L-a", texts("a", 1, start=2), start=2),
        *lines("L-b", texts("b", 1, start=2), start=2),
        *lines("L-c", texts("c", 1)),  # its write fails: the disk is full
    ]
    with pytest.raises(OutputError, match="disk is full"):
        sink.write(more)
    assert sink.path(PROJECT, "L-a").read_bytes() == raw(texts("a", 2))  # all cut back
    assert sink.path(PROJECT, "L-b").read_bytes() == raw(texts("b", 2))


@pytest.fixture
def few_descriptors() -> Iterator[int]:
    """The process's open-files limit lowered, for a moment, to leave a handful free."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = [int(fd) for fd in os.listdir("/proc/self/fd")]
    limit = max(used) + 6
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield limit - len([fd for fd in used if fd < limit])  # free below the limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_out_of_descriptors_is_an_error_event_saying_which_limit_to_raise(out, few_descriptors):
    sink = FileSink(out, max_open=1000)
    many = [record for n in range(few_descriptors + 3) for record in lines(f"L-{n}", ["x"])]
    with capture_logs() as events, pytest.raises(OutputError) as raised:
        sink.write(many)  # one write, every file in it still to be flushed: none can close
    with capture_logs() as again, pytest.raises(OutputError):
        sink.write(many)
    sink.close()
    (event,) = [e for e in events if e["event"] == "too_many_open_files"]
    assert event["log_level"] == "error"
    assert event["limit"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert "LimitNOFILE=" in event["hint"] and "ulimit -n" in event["hint"]
    assert "LimitNOFILE=" in str(raised.value)
    assert [e for e in again if e["event"] == "too_many_open_files"] == []  # said once
    assert all(p.stat().st_size == 0 for p in out.glob("*/*.log"))  # all cut back


@pytest.mark.parametrize("other", [False, True])
def test_a_full_disk_while_matching_an_emptied_file_writes_no_line_twice_on_the_retry(
    out, sink, other
):
    """After a restart, the lines read again are matched with an emptied file's; a full disk
    then fails the write (on that file, past the lines it held, or on another deployment's
    file): the retry of the same lines matches them again, and writes each line once."""
    after = texts("a", 5, start=100)
    path, before = emptied_then_killed(sink, after)
    write = FullDisk()
    restarted = FileSink(out, write=write)
    restarted.recover([before])
    more = texts("a", 3, start=105)
    group = lines("L-a", [*after, *more], start=100)
    if other:  # the file's own lines are all held: nothing of them to write
        group = [*lines("L-a", after, start=100), *lines("L-b", texts("b", 2))]
    write.armed = True
    with pytest.raises(OutputError, match="disk is full"):
        restarted.write(group)
    restarted.write(group)  # delivered again: the scheduler keeps a group that failed
    restarted.flush()
    restarted.close()
    assert path.read_bytes() == raw(after if other else [*after, *more])
    assert set_aside(path) == []

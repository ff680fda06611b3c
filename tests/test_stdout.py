"""The stdout output: one line per row, prefixes, JSON, and a reader that goes away."""

from __future__ import annotations

import errno
import io
import json

import pytest

from tailer.errors import WriteFailedError
from tailer.records import Line, LineRun
from tailer.sinks.stdout import StdoutSink

PROJECT = 777
FORGED = "a\n2026-03-01 09:30:00 Order filled"


def written(records: list, **options: object) -> str:
    stream = io.StringIO()
    sink = StdoutSink(stream, **options)  # type: ignore[arg-type]
    sink.write(records)
    sink.flush()
    return stream.getvalue()


def line(text: str, position: int = 0, deploy_id: str = "L-a") -> Line:
    return Line(PROJECT, deploy_id, "algo", position, position, text)


@pytest.mark.parametrize("prefix", [False, True, None])
def test_a_row_holding_a_line_break_is_one_text_line(prefix):
    records = [line("before"), line(FORGED, 1), line("cr\r\x1b[2J", 2)]
    head = "[algo] " if prefix else ""
    assert written(records, prefix=prefix).split("\n") == [
        head + "before",
        head + "a\\n2026-03-01 09:30:00 Order filled",
        head + "cr\\r\\x1b[2J",
        "",
    ]


def test_a_run_of_rows_is_escaped_like_single_lines():
    run = LineRun(PROJECT, "L-a", "algo", 0, 0, ("one", FORGED, "three"))
    assert written([run]) == "one\na\\n2026-03-01 09:30:00 Order filled\nthree\n"


def test_json_keeps_the_exact_text():
    out = written([line(FORGED), line("cr\r\x00", 1)], format="json")
    assert [json.loads(row)["text"] for row in out.splitlines()] == [FORGED, "cr\r\x00"]


class Broken(io.StringIO):
    """A stream whose reader went away (or whose disk failed) after ``good`` writes."""

    def __init__(self, error: OSError, good: int = 0) -> None:
        super().__init__()
        self.error, self.good = error, good

    def write(self, text: str) -> int:
        if self.good <= 0:
            raise self.error
        self.good -= 1
        return super().write(text)


def test_without_a_handler_a_closed_reader_ends_the_command_as_a_broken_pipe():
    sink = StdoutSink(Broken(BrokenPipeError(errno.EPIPE, "Broken pipe")))
    with pytest.raises(BrokenPipeError):
        sink.write([line("a")])


def test_a_closed_reader_is_reported_once_and_later_lines_go_nowhere():
    calls: list[str] = []
    stream = Broken(BrokenPipeError(errno.EPIPE, "Broken pipe"), good=1)
    sink = StdoutSink(stream, on_closed=lambda: calls.append("closed"))
    for position in range(4):
        sink.write([line(f"line {position}", position)])
        sink.flush()
    sink.close()
    assert calls == ["closed"]
    assert stream.getvalue() == "line 0\n"


def test_any_other_failure_to_write_is_a_write_error_naming_stdout():
    sink = StdoutSink(Broken(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(WriteFailedError, match="stdout: cannot write: No space left") as caught:
        sink.write([line("a")])
    assert caught.value.exit_code == 74

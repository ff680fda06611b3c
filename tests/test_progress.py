"""The progress line of a long catch-up, on a terminal's stderr."""

from __future__ import annotations

import io

from tailer.records import LineRun
from tailer.sinks.progress import ProgressSink


def run_of(n: int) -> LineRun:
    return LineRun(7, "L-a", "algo", 0, 0, tuple(f"line {i}" for i in range(n)))


def test_shown_after_a_second_throttled_then_wiped_when_caught_up():
    now = [0.0]
    left = [10_000]
    stream = io.StringIO()
    sink = ProgressSink(stream, lambda: left[0], clock=lambda: now[0])
    sink.write([run_of(1000)])  # at 0 s: too soon
    assert stream.getvalue() == ""
    now[0] = 1.0
    left[0] = 8_000
    sink.write([run_of(1000)])
    assert stream.getvalue() == "\r\x1b[Kqc-tail: 2,000 lines, 2,000/s, 8,000 left"
    now[0] = 1.2
    sink.write([run_of(1000)])  # within half a second of the last: not redrawn
    assert stream.getvalue().count("qc-tail:") == 1
    now[0], left[0] = 2.0, 0
    sink.write([run_of(10)])  # caught up: wiped
    assert stream.getvalue().endswith("\r\x1b[K")
    sink.close()
    assert stream.getvalue().count("\r\x1b[K") == 2


def test_a_short_read_shows_nothing():
    stream = io.StringIO()
    sink = ProgressSink(stream, lambda: 0, clock=lambda: 5.0)
    sink.write([run_of(50)])
    sink.close()
    assert stream.getvalue() == ""

"""The keyword filter in front of an output (``tail --grep``)."""

from __future__ import annotations

import io
import json

from tailer.records import Gap, Line, LineRun
from tailer.sinks.grep import GrepSink
from tailer.sinks.stdout import StdoutSink


def test_keeps_lines_holding_the_keyword_in_any_case_and_every_gap():
    stream = io.StringIO()
    sink = GrepSink(StdoutSink(stream, format="json"), "oRdEr")
    run = LineRun(7, "L-a", "algo", 10, 0, ("Order filled", "heartbeat", "reorder", "ORDER x"))
    gap = Gap(7, "L-a", "algo", 3, 7)
    sink.write([run, gap, Line(7, "L-a", "algo", 20, 8, "no match")])
    sink.flush()
    objects = [json.loads(text) for text in stream.getvalue().splitlines()]
    kept = [(o["type"], o.get("text"), o.get("line")) for o in objects]
    assert kept == [
        ("line", "Order filled", 10),
        ("line", "reorder", 12),
        ("line", "ORDER x", 13),
        ("gap", None, None),
    ]


def test_nothing_matching_writes_nothing():
    stream = io.StringIO()
    sink = GrepSink(StdoutSink(stream), "fill")
    sink.write([LineRun(7, "L-a", "algo", 0, 0, ("a", "b"))])
    sink.close()
    assert stream.getvalue() == ""

"""The cursor: what it keeps of the lines delivered to recognise them later."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tailer.cursor import TAIL_LINES, Cursor, period
from tailer.records import fingerprint

LINES = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=40)


def delivered(texts: list[str], cuts: list[int]) -> Cursor:
    """A cursor that was given ``texts`` in batches cut at ``cuts``."""
    cursor, start = Cursor(1, "L-x"), 0
    for cut in [*sorted(c % (len(texts) + 1) for c in cuts), len(texts)]:
        cursor, start = cursor.advance(texts[start:cut]), max(start, cut)
    return cursor


def expected_run(texts: list[str]) -> tuple[int, str | None]:
    """The run the last lines make, computed from all of them at once."""
    prints = [fingerprint(text) for text in texts]
    q = period(prints[-TAIL_LINES:])
    if q is None:
        return 0, None
    j = len(prints) - 1 - q
    while j >= 0 and prints[j] == prints[j + q]:
        j -= 1
    return len(prints) - 1 - j, prints[j] if j >= 0 else None


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(texts=LINES, cuts=st.lists(st.integers(0, 40), max_size=6))
def test_the_run_is_the_same_however_the_lines_came_in_batches(texts, cuts):
    cursor = delivered(texts, cuts)
    assert cursor.tail == tuple(fingerprint(text) for text in texts[-TAIL_LINES:])
    assert (cursor.run, cursor.anchor) == expected_run(texts)
    assert cursor.position == len(texts)


def test_identical_lines_after_another_are_a_run_anchored_by_it():
    cursor = Cursor(1, "L-x").advance(["x", "y"]).advance(["same"] * 7).advance(["same"] * 5)
    assert (cursor.run, cursor.anchor) == (12, fingerprint("y"))
    prints, unique = cursor.signature(limit=100)
    assert unique and prints == (fingerprint("y"), *[fingerprint("same")] * 12)
    assert cursor.run_start() == (fingerprint("y"), fingerprint("same"))


def test_a_run_from_the_first_line_or_longer_than_the_limit_is_not_unique():
    from_start = Cursor(1, "L-x").advance(["same"] * 6)
    assert (from_start.run, from_start.anchor) == (6, None)
    assert from_start.signature(limit=100) == (from_start.tail, False)
    long = Cursor(1, "L-x").advance(["y", *["same"] * 200])
    assert long.signature(limit=100) == (long.tail, False)
    assert long.run_start() == (fingerprint("y"), fingerprint("same"))


def test_a_pattern_of_two_lines_is_a_run_of_period_two():
    cursor = Cursor(1, "L-x").advance(["start", "tick", "tock", "tick", "tock", "tick"])
    assert (cursor.run, cursor.anchor) == (5, fingerprint("start"))
    assert cursor.run_start() == (fingerprint("start"), fingerprint("tick"))


def test_distinct_lines_have_no_run():
    cursor = Cursor(1, "L-x").advance([f"line {i}" for i in range(10)])
    assert (cursor.run, cursor.anchor) == (0, None)
    assert cursor.signature(limit=100) == (cursor.tail, True)
    assert cursor.run_start() is None

"""``realign.occurs``: the search the check of the rows below a window rests on."""

from __future__ import annotations

import pytest

from tailer.realign import occurs


@pytest.mark.parametrize(
    ("needle", "rows", "found"),
    [
        ("ab", "xab", True),  # at the very end
        ("ab", "abx", True),  # at the very start
        ("ab", "xacab", True),  # after a false start
        ("aab", "aaab", True),  # a false start that overlaps the match
        ("ab", "xaca", False),  # the first row alone is not enough
        ("ab", "xa", False),  # cut off at the end
        ("abc", "ab", False),  # longer than the rows
        ("", "", True),
    ],
)
def test_occurs_finds_the_needle_as_consecutive_rows(needle: str, rows: str, found: bool) -> None:
    assert occurs(list(needle), list(rows)) is found

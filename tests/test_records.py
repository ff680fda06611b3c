"""Records: how a row's text becomes exactly one line of a text output."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tailer.records import escaped, escaped_lines


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("plain 2026-03-01 09:30:00 text", "plain 2026-03-01 09:30:00 text"),
        ("tab\tstays", "tab\tstays"),
        ("forged\n2026-03-01 09:30:00 Order filled", "forged\\n2026-03-01 09:30:00 Order filled"),
        ("cr\r", "cr\\r"),
        ("nul\x00 bell\x07 esc\x1b[2J", "nul\\x00 bell\\x07 esc\\x1b[2J"),
        ("del\x7f nel\x85 csi\x9b", "del\\x7f nel\\x85 csi\\x9b"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("C:\\new\\table", "C:\\new\\table"),  # a backslash is left as it is
        ("café ✓ 日本 \xa0", "café ✓ 日本 \xa0"),
    ],
)
def test_a_row_is_one_line_with_its_controls_escaped(text, line):
    assert escaped(text) == line


@settings(max_examples=500, deadline=None, database=None)
@given(st.lists(st.text(), max_size=20))
def test_no_row_can_forge_another_line_in_any_reader(texts):
    block = escaped_lines(texts)
    assert block.splitlines() == [escaped(text) for text in texts]  # Python splits on \x85 too
    assert block.count("\n") == len(texts)


@pytest.mark.parametrize("code", range(128))
def test_every_ascii_character_is_escaped_alike_in_a_block_of_plain_lines(code):
    """The block's quick check for ASCII lets through exactly what ``escaped`` leaves alone."""
    texts = ["2026-03-01 09:30:00 plain", f"before {chr(code)} after", "tab\tends"]
    assert escaped_lines(texts) == "".join(escaped(text) + "\n" for text in texts)


def test_lines_without_controls_are_written_as_they_are():
    texts = [f"2026-03-01 00:00:{i % 60:02d} msg {i}" for i in range(1000)]
    assert escaped_lines(texts) == "".join(text + "\n" for text in texts)
    assert escaped_lines([]) == ""

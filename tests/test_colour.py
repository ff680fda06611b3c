"""Colour for prefixes: when it is wanted, and one colour per target."""

from __future__ import annotations

import io
import os
import pty

import pytest

from tailer.colour import PALETTE, Painter, wanted


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("choice", "terminal", "env", "expected"),
    [
        ("auto", True, {}, True),
        ("auto", False, {}, False),  # a pipe or a file
        ("auto", True, {"NO_COLOR": "1"}, False),
        ("auto", True, {"NO_COLOR": ""}, True),  # set but empty: no-color.org says ignore it
        ("auto", True, {"TERM": "dumb"}, False),
        ("always", False, {"NO_COLOR": "1"}, True),  # asked for in so many words
        ("never", True, {}, False),
    ],
)
def test_wanted(choice, terminal, env, expected):
    stream = Terminal() if terminal else io.StringIO()
    assert wanted(choice, stream, env) is expected


def test_a_real_terminal_is_recognised():
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as stream:
            assert wanted("auto", stream, {}) is True
    finally:
        os.close(leader)
        os.close(follower)


def test_a_closed_stream_is_no_terminal():
    stream = io.StringIO()
    stream.close()
    assert wanted("auto", stream, {}) is False


def test_each_key_keeps_its_own_colour_in_order_of_appearance():
    paint = Painter()
    assert paint("1", "[a]") == f"\x1b[{PALETTE[0]}m[a]\x1b[0m"
    assert paint("2", "[b]") == f"\x1b[{PALETTE[1]}m[b]\x1b[0m"
    assert paint("1", "[a L-1]") == f"\x1b[{PALETTE[0]}m[a L-1]\x1b[0m"
    colours = {paint(str(k), "x") for k in range(len(PALETTE))}
    assert len(colours) == len(PALETTE)  # the first twelve never share one

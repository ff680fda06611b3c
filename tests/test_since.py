"""``--since``: parsing a moment, and bisecting a deployment's windows to it (over loopback)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.since import Since, first_since, parse_since

from .conftest import PROJECT, TOKEN, USER_ID

BASE = datetime(2026, 11, 30, 9, 30)


@pytest.mark.parametrize(
    ("text", "since"),
    [
        ("2h", Since(ago=7200)),
        ("90m", Since(ago=5400)),
        ("1h30m", Since(ago=5400)),
        ("1.5d", Since(ago=129600)),
        ("45s", Since(ago=45)),
        ("2026-11-30T14:00", Since(at=datetime(2026, 11, 30, 14, 0))),
        ("2026-11-30 14:00:05", Since(at=datetime(2026, 11, 30, 14, 0, 5))),
        ("2026-11-30", Since(at=datetime(2026, 11, 30))),
    ],
)
def test_parse_since(text, since):
    assert parse_since(text) == since


@pytest.mark.parametrize("text", ["", "2", "h", "2 h", "2h ago", "tomorrow", "2026-11-30T14:00Z"])
def test_parse_since_refuses(text):
    with pytest.raises(ValueError):
        parse_since(text)


def test_a_span_is_before_now_in_the_given_zone():
    now = datetime(2026, 11, 30, 12, 0, tzinfo=None)
    moment = Since(ago=7200).moment("America/New_York", now=lambda: now)
    assert moment == datetime(2026, 11, 30, 10, 0)
    assert Since(at=BASE).moment("UTC") == BASE  # a time is taken as the lines' own


def text_at(i: int, seconds: int | None) -> str:
    if seconds is None:
        return f"  at frame {i}"  # a stack trace's line: no timestamp
    return f"{BASE + timedelta(seconds=seconds):%Y-%m-%d %H:%M:%S} line {i}"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(st.one_of(st.none(), st.integers(0, 3)), min_size=0, max_size=1200),
    before=st.integers(0, 300),
    pick=st.integers(-5, 4000),
)
def test_first_since_finds_the_first_stamped_line_at_or_after(emu, steps, before, pick):
    """Non-decreasing stamps (some lines without one), behind another deployment's lines:
    the answer is the first stamped line at the moment or later, in at most
    log2(windows) + 1 requests."""
    emu.deploy(PROJECT)
    emu.write(PROJECT, [f"older {i}" for i in range(before)])
    deploy_id = emu.deploy(PROJECT)
    seconds, texts, stamps = 0, [], []
    for i, step in enumerate(steps):
        if step is not None:
            seconds += step
        texts.append(text_at(i, None if step is None else seconds))
        stamps.append(None if step is None else seconds)
    emu.write(PROJECT, texts)
    moment = BASE + timedelta(seconds=pick)
    expected = next((i for i, s in enumerate(stamps) if s is not None and s >= pick), len(texts))
    api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN))
    emu.stats.reset()
    window = 50
    offset = emu.deployment_offset(PROJECT, deploy_id)
    found = first_since(api, PROJECT, deploy_id, offset, offset + len(texts), moment, window=window)
    assert found == expected
    windows = -(-len(texts) // window)
    assert emu.stats.by_path.get("/live/logs/read", 0) <= math.log2(windows + 1) + 1

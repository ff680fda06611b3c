"""``--since``: where a deployment's lines reach a moment, found by bisecting its windows."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from tailer.api import QcApi
from tailer.reader import MAX_WINDOW
from tailer.records import line_time

_SPAN = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class Since:
    """A moment as the user gave it: ``ago`` seconds before now, or a wall-clock ``at`` in the
    algorithm's time zone (the zone of the lines' own timestamps)."""

    ago: float | None = None
    at: datetime | None = None

    def moment(self, zone: str, now: Callable[[], datetime] | None = None) -> datetime:
        """The naive datetime, in ``zone``, that line timestamps are compared with."""
        if self.at is not None:
            return self.at
        current = now() if now is not None else datetime.now(ZoneInfo(zone))
        return (current - timedelta(seconds=self.ago or 0.0)).replace(tzinfo=None)


def parse_since(text: str) -> Since:
    """``2h``, ``90m``, ``1h30m``, ``2d`` (before now), or ``2026-11-30T14:00`` (ISO-8601, a
    space for the ``T`` allowed, a date alone meaning its midnight); ValueError otherwise."""
    spans = _SPAN.findall(text)
    if spans and "".join(a + b for a, b in spans) == text:
        return Since(ago=sum(float(n) * _UNITS[unit] for n, unit in spans))
    at = datetime.fromisoformat(text.strip())
    if at.tzinfo is not None:
        raise ValueError(f"{text}: give the time without a zone (the algorithm's is used)")
    return Since(at=at)


def first_since(
    api: QcApi,
    project_id: int,
    deploy_id: str,
    offset: int,
    end: int,
    moment: datetime,
    window: int = MAX_WINDOW,
) -> int:
    """How many of the deployment's lines (project lines ``[offset, end)``) come before its
    first line stamped at ``moment`` or later (all of them if none is).

    Binary search over the deployment's windows, one request each, assuming timestamps do
    not go back within a deployment: at most log2(windows) + 1 requests. Lines without a
    timestamp belong to the stamped line above them (a stack trace to its error), so the
    answer is always a stamped line.
    """
    count = max(0, end - offset)
    windows = -(-count // window)
    lo, hi = 0, windows  # the first window holding a line at ``moment`` or later is in [lo, hi]
    found = count
    while lo < hi:
        mid = (lo + hi) // 2
        start = offset + mid * window
        rows = api.read_logs(project_id, deploy_id, start, min(start + window, end)).logs
        stamps = [(i, stamp) for i, row in enumerate(rows) if (stamp := line_time(row))]
        hit = next((i for i, stamp in stamps if stamp >= moment), None)
        if hit is None:  # the window is before the moment (or holds no timestamp at all)
            lo = mid + 1
        else:
            found, hi = mid * window + hit, mid
            if stamps[0][1] < moment:  # the moment falls inside this window: found
                break
    return found

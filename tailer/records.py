"""The records that flow from followers to outputs: log lines and gaps."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime
from itertools import count, repeat
from typing import NamedTuple

_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?= |$)")


class Line(NamedTuple):
    """One log line of one deployment (a NamedTuple: a catch-up makes 100,000 of them)."""

    project_id: int
    deploy_id: str
    name: str
    number: int  # project-wide line number, as the API numbered it when read
    position: int  # index within the deployment, as the cursor counts it (stable across trims)
    text: str
    launched: float | None = None  # the deployment's launch time (epoch seconds), if known


def lines_of(
    project_id: int,
    deploy_id: str,
    name: str,
    texts: Sequence[str],
    *,
    number: int,
    position: int,
    launched: float | None,
) -> tuple[Line, ...]:
    """Consecutive lines from ``number``/``position`` on: a window's rows as Lines.

    Built by ``map`` over ``tuple.__new__`` at C speed, 3x faster than calling ``Line``.
    """
    fields = zip(
        repeat(project_id),
        repeat(deploy_id),
        repeat(name),
        count(number),
        count(position),
        texts,
        repeat(launched),
    )
    return tuple(map(tuple.__new__, repeat(Line), fields))


class Gap(NamedTuple):
    """Lines the API removed (retention) before they could be read."""

    project_id: int
    deploy_id: str
    name: str
    lost: int | None  # None: the API does not let the count be known
    position: int  # the position of the first line after the gap


def line_time(text: str) -> datetime | None:
    """The line's own ``YYYY-MM-DD HH:MM:SS`` (algorithm time zone, naive), if it has one."""
    match = _STAMP.match(text)
    if not match:
        return None
    try:
        return datetime.fromisoformat(f"{match[1]}T{match[2]}")
    except ValueError:
        return None


def fingerprint(text: str) -> str:
    """A short, stable digest of a line's text, kept in cursors to recognise it later."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]

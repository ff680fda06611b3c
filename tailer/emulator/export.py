"""The emulator's ``/live/export/logs``: a project's whole retained log as a file, under a quota."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from tailer.emulator.faults import Reply, json_reply, refusal
from tailer.emulator.model import Model

OVER_QUOTA_SHAPES = ("429", "refusal")
"""What a call over the quota answers: HTTP 429 with Retry-After, or 200 ``success:false``."""

SPOILS = ("truncated", "garbled", "skewed", "altered")
"""Scripted misbehaviours of one export answer: the body cut short (the connection closes
before its declared length), bytes that are not UTF-8, a row missing from its middle, or the
middle row's text changed."""


class Export:
    """The export endpoint's state: on or off, the account's quota, scripted spoiled answers.

    ``quota`` calls are answered per ``period`` seconds (a sliding window over the calls that
    got a file); ``over_quota`` is the shape of the refusal past it (see ``OVER_QUOTA_SHAPES``).
    ``enabled = False`` makes the endpoint unknown (404), as on an account without it.
    """

    def __init__(
        self,
        model: Model,
        *,
        enabled: bool = True,
        quota: int = 45,
        period: float = 1800.0,
        over_quota: str = "429",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if over_quota not in OVER_QUOTA_SHAPES:
            raise ValueError(f"over_quota must be one of {OVER_QUOTA_SHAPES}, not {over_quota!r}")
        self.model = model
        self.enabled = enabled
        self.quota, self.period, self.over_quota = quota, period, over_quota
        self.served = 0  # files sent, spoiled ones included
        self.refused = 0  # calls over the quota
        self._clock = clock
        self._calls: deque[float] = deque()
        self._spoils: list[str] = []
        self._lock = threading.Lock()

    def spoil(self, kinds: Iterable[str]) -> None:
        """The next answers (one each) are spoiled in these ways (see ``SPOILS``)."""
        chosen = list(kinds)
        for kind in chosen:
            if kind not in SPOILS:
                raise ValueError(f"unknown spoil {kind!r}; known: {', '.join(SPOILS)}")
        with self._lock:
            self._spoils.extend(chosen)

    def answer(self, project_id: int, deploy_id: str) -> Reply:
        """The file, or the refusal of a call over the quota (``NotFound`` for no project)."""
        with self._lock:
            now = self._clock()
            while self._calls and now - self._calls[0] >= self.period:
                self._calls.popleft()
            if len(self._calls) >= self.quota:
                self.refused += 1
                return self._over_quota(now)
            self._calls.append(now)
            self.served += 1
            spoil = self._spoils.pop(0) if self._spoils else None
        rows = self.model.visible(project_id)
        if spoil == "skewed" and rows:
            del rows[len(rows) // 2]
        elif spoil == "altered" and rows:
            rows[len(rows) // 2] += " (altered)"
        body = "".join(f"{row}\n" for row in rows).encode()
        if spoil == "garbled":
            body = body[: len(body) // 2] + b"\xff\xfe" + body[len(body) // 2 :]
        disposition = f'attachment; filename="algorithm-log_{deploy_id}.txt"'
        headers = (("Content-Disposition", disposition),)
        kind = "application/octet-stream"
        if spoil == "truncated":
            return Reply(200, body[: len(body) // 2], kind, headers, len(body))
        return Reply(200, body, kind, headers)

    def _over_quota(self, now: float) -> Reply:
        message = f"Rate limit exceeded: at most {self.quota} log exports per 30 minutes"
        if self.over_quota == "refusal":
            return refusal(message)
        oldest = self._calls[0] if self._calls else now
        wait = max(1, round(self.period - (now - oldest)))
        payload = {"success": False, "errors": [message]}
        return json_reply(payload, 429, ("Retry-After", str(wait)))

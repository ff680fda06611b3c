"""QuantConnect's timestamped-hash authentication, signed afresh for every request."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import requests

from tailer import logs

log = logs.get_logger(__name__)

SKEW_THRESHOLD = 5.0
"""Seconds of disagreement with the server's ``Date`` before we sign with the server's time."""


class ServerClock:
    """The local clock, corrected by the skew measured from the API's ``Date`` headers.

    ``Date`` has one-second resolution, so disagreements below ``threshold`` are noise and
    are ignored; beyond it the offset is adopted (and logged once per change).
    """

    def __init__(
        self, now: Callable[[], float] = time.time, threshold: float = SKEW_THRESHOLD
    ) -> None:
        self._now = now
        self._threshold = threshold
        self._lock = threading.Lock()
        self.offset = 0.0
        self.last_skew: float | None = None
        self._last_header = ""

    def now(self) -> float:
        return self._now() + self.offset

    def observe(self, date_header: str | None, received_at: float | None = None) -> None:
        """Compare a response's ``Date`` with the local time it arrived at."""
        if not date_header or date_header == self._last_header:
            return  # one-second resolution: the same header says nothing new (and is cheap)
        self._last_header = date_header
        try:
            server = parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        local = self._now() if received_at is None else received_at
        skew = server - local
        with self._lock:
            self.last_skew = skew
            if abs(skew - self.offset) < self._threshold:
                return
            self.offset = float(round(skew)) if abs(skew) >= self._threshold else 0.0
        log.warning(
            "clock_skew",
            message=f"clock skew of {round(skew)} s",
            seconds=round(skew),
            hint="signing with the server's time; keep this host's clock synced (NTP)",
        )


def signature(api_token: str, timestamp: int) -> str:
    """The hex SHA-256 of ``"<token>:<timestamp>"`` that QuantConnect expects."""
    return hashlib.sha256(f"{api_token}:{timestamp}".encode()).hexdigest()


def auth_headers(user_id: int, api_token: str, timestamp: int) -> dict[str, str]:
    """The two headers of one signed request."""
    basic = base64.b64encode(f"{user_id}:{signature(api_token, timestamp)}".encode()).decode()
    return {"Timestamp": str(timestamp), "Authorization": f"Basic {basic}"}


class QcAuth(requests.auth.AuthBase):
    """Signs each request as it is sent, so every retry carries a fresh timestamp."""

    def __init__(self, user_id: int, api_token: str, clock: ServerClock | None = None) -> None:
        self.user_id = user_id
        self._api_token = api_token
        self.clock = clock or ServerClock()

    def headers(self) -> dict[str, str]:
        """The headers of one request, signed with the (corrected) time of now."""
        return auth_headers(self.user_id, self._api_token, int(self.clock.now()))

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.update(self.headers())
        return request

    def __repr__(self) -> str:
        return f"QcAuth(user_id={self.user_id})"

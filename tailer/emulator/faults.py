"""Fault injection: which request gets which misbehaviour, scripted or by probability."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

KINDS = (
    "500",
    "empty500",
    "502",
    "503",
    "429",
    "reset",
    "truncated",
    "slow",
    "auth",
    "html",
)
"""Every fault the emulator knows how to commit."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One misbehaviour for one request.

    ``retry_after`` is the ``Retry-After`` of a ``429`` (default 1 s); ``delay`` is how long a
    ``slow`` answer sleeps before answering normally (default 2 s).
    """

    kind: str
    retry_after: float | None = None
    delay: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(KINDS)}")


def _normal(path: str | None) -> str | None:
    if path is None:
        return None
    return "/" + path.removeprefix("/api/v2").strip("/")


class Faults:
    """The fault plan: scripted faults first, in order, then random ones if configured."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: list[tuple[str | None, Fault]] = []
        self._rate = 0.0
        self._kinds: tuple[str, ...] = ()
        self._path: str | None = None
        self._rng = random.Random(0)

    def script(self, faults: Iterable[Fault], path: str | None = None) -> None:
        """The next requests (to ``path``, or to any path) get these faults, one each."""
        where = _normal(path)
        with self._lock:
            self._script.extend((where, fault) for fault in faults)

    def random(
        self,
        rate: float,
        kinds: Iterable[str] = ("500", "empty500", "502", "503", "429", "reset", "truncated"),
        seed: int = 0,
        path: str | None = None,
    ) -> None:
        """Fault each request (to ``path``, or any) with probability ``rate``, reproducibly."""
        chosen = tuple(kinds)
        for kind in chosen:
            Fault(kind)  # validates the kind
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], not {rate}")
        with self._lock:
            self._rate, self._kinds, self._path = rate, chosen, _normal(path)
            self._rng = random.Random(seed)

    def clear(self) -> None:
        """Back to faultless service: no script, no randomness."""
        with self._lock:
            self._script.clear()
            self._rate, self._kinds, self._path = 0.0, (), None

    @property
    def pending(self) -> int:
        """Scripted faults not yet committed."""
        with self._lock:
            return len(self._script)

    def take(self, path: str) -> Fault | None:
        """The fault for a request to ``path`` (relative to ``/api/v2``), if any."""
        where = _normal(path)
        with self._lock:
            for i, (scripted, fault) in enumerate(self._script):
                if scripted is None or scripted == where:
                    del self._script[i]
                    return fault
            matches = self._rate and self._kinds and self._path in (None, where)
            if matches and self._rng.random() < self._rate:
                return Fault(self._rng.choice(self._kinds))
        return None


@dataclass(frozen=True, slots=True)
class Reply:
    """One whole HTTP answer, sent in a single write. ``length``, if set, is the
    Content-Length declared instead of the body's own (a body cut short: the connection then
    closes after it)."""

    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    length: int | None = None


def json_reply(payload: dict[str, Any], status: int = 200, *headers: tuple[str, str]) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode(), headers=headers)


def refusal(message: str, status: int = 200, *headers: tuple[str, str]) -> Reply:
    """The API's way of saying no: ``{"success": false, "errors": [message]}``."""
    return json_reply({"success": False, "errors": [message]}, status, *headers)


def auth_reply(shape: str) -> Reply:
    """An authentication failure in one of the shapes QuantConnect has been seen to use."""
    if shape == "hash":
        return refusal("Hash doesn't match.")
    if shape == "userid":
        return refusal("UserID not valid")
    if shape == "empty500":
        return Reply(500, content_type=None)
    return refusal("Unauthorized", 401, ("WWW-Authenticate", 'Basic realm="QuantConnect"'))


def fault_reply(fault: Fault, auth_shape: str) -> Reply:
    """What a fault looks like on the wire (``reset`` and ``slow`` are actions, not answers)."""
    if fault.kind == "500":
        return refusal("Internal Server Error", 500)
    if fault.kind == "empty500":
        return Reply(500, content_type=None)
    if fault.kind in ("502", "503"):
        return refusal(HTTPStatus(int(fault.kind)).phrase, int(fault.kind))
    if fault.kind == "429":
        after = fault.retry_after if fault.retry_after is not None else 1
        return refusal("Too Many Requests", 429, ("Retry-After", f"{after:g}"))
    if fault.kind == "truncated":
        whole = json_reply({"logs": ["cut"] * 8, "length": 8, "success": True, "errors": []})
        return Reply(200, whole.body[: len(whole.body) // 2])
    if fault.kind == "auth":
        return auth_reply(auth_shape)
    if fault.kind == "html":
        page = b"<html><head><title>502 Bad Gateway</title></head><body>Bad Gateway</body></html>"
        return Reply(502, page, "text/html; charset=utf-8")
    raise ValueError(f"fault {fault.kind!r} is an action, not an answer")

"""Loki's refusals: what a status means to us, and which entries a 400 says it refused."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NamedTuple, Protocol


class _Answer(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


class Refused(Exception):
    """Loki (or what stands in front of it) answered with a refusal that is not a 400."""

    def __init__(self, status: int, problem: str, text: str) -> None:
        super().__init__(problem)
        self.status = status
        self.problem = problem
        self.text = text  # what Loki answered: shown only through LokiPush.says


def problem(status: int, url: str, response: _Answer | None = None) -> str:
    """A refusal in words a user can act on."""
    if status == 401:
        return f"Loki refuses our credentials (HTTP 401 from {url})"
    if status == 403:
        return f"Loki forbids this to our credentials (HTTP 403 from {url})"
    if status == 404:
        return f"no Loki API at {url} (HTTP 404)"
    if 300 <= status < 400:
        target = response.headers.get("Location", "?") if response is not None else "?"
        return f"{url} redirects to {target} (HTTP {status}); set that URL instead"
    return f"Loki refuses the request (HTTP {status} from {url})"


class Refusal(NamedTuple):
    """Entries of one push that Loki refused for one reason."""

    reason: str  # too old, too new, too long, too far behind, out of order; or "refused"
    entries: int


HINTS = {
    "too old": (
        "Loki refuses lines older than a week by default (limits_config: reject_old_samples, "
        "reject_old_samples_max_age: 168h); for a backfill raise reject_old_samples_max_age "
        "on Loki before qc-tail pushes them"
    ),
    "too new": "the line's time is ahead of Loki's clock: check output.loki.timezone",
    "too long": "the endpoint's line limit is below Loki's default (262144 bytes)",
    "too far behind": "Loki takes a stream's entries at most max_chunk_age/2 (1 h) out of order",
    "refused": "Loki refused the whole push; see its reason",
}

_COUNTED = r"(?:(\d+) errors like: )?"
_PATTERNS = (
    ("too old", re.compile(_COUNTED + r"entry for stream '.*?' has timestamp too old", re.S)),
    ("too new", re.compile(_COUNTED + r"entry for stream '.*?' has timestamp too new", re.S)),
    ("too long", re.compile(_COUNTED + r"max entry size '\d+' bytes exceeded", re.I)),
)
_IGNORED = re.compile(r"total ignored: (\d+) out of \d+")
_IGNORED_REASON = re.compile(r"ignored, reason: '(entry too far behind|entry out of order)")


def refusals(text: str, entries: int) -> list[Refusal]:
    """Which of a push's ``entries`` a 400 refused, by reason, as far as Loki names them.

    Loki stores the rest of such a push. A 400 that names no entry refused it all.
    """
    found: list[Refusal] = []
    for reason, pattern in _PATTERNS:
        count = sum(int(match[1] or 1) for match in pattern.finditer(text))
        if count:
            found.append(Refusal(reason, count))
    ignored = sum(int(match[1]) for match in _IGNORED.finditer(text))
    if ignored:
        kind = _IGNORED_REASON.search(text)
        found.append(Refusal(kind[1].removeprefix("entry ") if kind else "refused", ignored))
    if not found:
        return [Refusal("refused", entries)]
    total = sum(refusal.entries for refusal in found)
    if total > entries:  # a message we misread: never count more than were sent
        return [Refusal(found[0].reason, entries)]
    return found

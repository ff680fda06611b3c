"""Discovery: which projects have a Running deployment to follow, asked every few minutes."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from tailer import logs
from tailer.api import QcApi
from tailer.config import DiscoveryConfig
from tailer.errors import ApiError, TransientError, UnreachableError

log = logs.get_logger(__name__)

ASK_AGAIN = 1.0
"""Seconds before a worker looks again for the answer another worker is asking for."""

_Answer = tuple[float, dict[int, str] | None]
"""When it was asked, and the projects running then (None: the API could not say)."""
_NOT_WAITING = (0.0, None)


@dataclass(slots=True)
class _Listing:
    """The latest answer, shared by the discoveries of several workers."""

    lock: threading.Lock = field(default_factory=threading.Lock)  # held while asking
    answer: _Answer | None = None
    failing: bool = False


def shard_of(project_id: int, shards: int) -> int:
    """The shard (1 to ``shards``) that owns the project: a hash of its id that every
    instance, on every host and Python version, computes alike (not ``hash()``, which is
    salted per process for strings and may change between versions)."""
    return zlib.crc32(str(project_id).encode()) % shards + 1


class Discovery:
    """Lists the account's Running deployments (one request for the whole fleet).

    Workers (one per output pipeline) each have their own (``share``), with its own due
    time; an answer one of them asked for serves the others too, so the fleet is listed
    once per interval however many workers there are.
    """

    def __init__(
        self,
        api: QcApi,
        config: DiscoveryConfig,
        clock: Callable[[], float] = time.monotonic,
        *,
        listing: _Listing | None = None,
    ) -> None:
        self.api = api
        self.config = config
        self._clock = clock
        self.due = 0.0
        self._listing = listing or _Listing()
        self._used: _Answer | None = None  # the last answer this one gave
        self._waited: _Answer | None = _NOT_WAITING  # the answer current when it found
        # another worker asking: whatever replaced it is that worker's, and good here

    def share(self) -> Discovery:
        """A discovery for another worker: its own due time, the same answers."""
        return Discovery(self.api, self.config, self._clock, listing=self._listing)

    def running(self) -> dict[int, str] | None:
        """Projects with a Running deployment now, and its deploy id; None if the API could
        not say (or another worker is asking: this one looks again shortly)."""
        listing = self._listing
        answer = listing.answer
        self.due = self._clock() + self.config.interval  # also if asking raises
        if not self._fresh(answer):
            if not listing.lock.acquire(blocking=False):
                self.due = self._clock() + min(ASK_AGAIN, self.config.interval)
                if self._waited is _NOT_WAITING:
                    self._waited = answer
                return None
            try:
                answer = listing.answer
                if not self._fresh(answer):
                    answer = listing.answer = (self._clock(), self._ask())
            finally:
                listing.lock.release()
        assert answer is not None
        self._used, self._waited = answer, _NOT_WAITING
        self.due = answer[0] + self.config.interval
        return answer[1]

    def wants(self, project_id: int) -> bool:
        """Whether discovery may follow the project: ``discovery.projects`` limits it, and
        ``discovery.shard`` takes this instance's share of those."""
        k, n = self.config.shard
        return self.limits(project_id) and shard_of(project_id, n) == k

    def limits(self, project_id: int) -> bool:
        """Whether ``discovery.projects`` lets the project be followed (by some shard)."""
        return not self.config.projects or project_id in self.config.projects

    def _fresh(self, answer: _Answer | None) -> bool:
        """An answer another worker asked for, not yet used here: younger than the interval,
        or the one that worker was asking for when this one looked."""
        if answer is None or answer is self._used:
            return False
        if self._waited is not _NOT_WAITING and answer is not self._waited:
            return True
        return self._clock() - answer[0] < self.config.interval

    def _ask(self) -> dict[int, str] | None:
        listing = self._listing
        try:
            deployments = self.api.list_live(status="Running")
        except (TransientError, UnreachableError, ApiError) as exc:
            if not listing.failing:
                log.warning("discovery_failing", error=str(exc), hint="will ask again")
                listing.failing = True
            return None
        if listing.failing:
            log.info("discovery_recovered")
            listing.failing = False
        return {d.project_id: d.deploy_id for d in deployments if self.wants(d.project_id)}

"""Telling a terminal's user that a followed algorithm stopped, and when ``tail`` is done."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from tailer.api import Deployment, QcApi
from tailer.errors import ApiError, TransientError, UnreachableError
from tailer.follower import ProjectFollower
from tailer.sinks.stdout import display_name


@dataclass(frozen=True, slots=True)
class Stop:
    """A followed deployment that left Running."""

    project_id: int
    deploy_id: str
    name: str
    status: str
    stopped: datetime | None

    def line(self, waiting: bool) -> str:
        when = f" at {self.stopped.astimezone(UTC):%H:%M:%S} UTC" if self.stopped else ""
        text = f"qc-tail: [{display_name(self.name)}] stopped: {self.status}{when}"
        return text + ("; waiting for a redeploy" if waiting else "")

    def object(self) -> dict[str, Any]:
        return {
            "type": "status",
            "project_id": self.project_id,
            "deploy_id": self.deploy_id,
            "name": self.name,
            "status": self.status,
            "stopped": self.stopped.isoformat() if self.stopped else None,
        }


class StatusWatch:
    """Asks, every ``interval`` seconds, for the status of every deployment being followed
    (one ``/live/list`` for all of them) and announces each that stopped: a line on
    ``stderr`` (saying, if ``waits``, that a project's follower waits for a redeploy) and,
    through ``note``, a status object for a JSON stream.

    ``done`` is true once every followed deployment is pinned (``--deploy``), has stopped,
    ``drain`` seconds have passed since (its last lines can appear that late), and a read
    made after that found nothing more. A project followed across redeploys is never done.
    """

    def __init__(
        self,
        api: QcApi,
        followers: Callable[[], Sequence[ProjectFollower]],
        *,
        interval: float,
        drain: float,
        note: Callable[[dict[str, Any]], None] = lambda obj: None,
        stderr: TextIO | None = None,
        waits: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self._followers = followers
        self.interval = interval
        self.drain = drain
        self._note = note
        self._stderr = stderr
        self._waits = waits  # a project's follower waits for a redeploy (not under --all)
        self._clock = clock
        self._wall = wall
        self._due = 0.0
        self._failing = False
        self.stops: dict[str, tuple[Stop, float]] = {}  # deploy id -> stop, and when it ended
        # Drained deployments: the follower's polls that read to the end, when it was drained.
        self._rechecked: dict[str, int] = {}

    def check(self) -> None:
        """Ask, if due; announce what stopped since the last answer."""
        if self._clock() < self._due:
            return
        self._due = self._clock() + self.interval
        watched = {
            (reader.project_id, reader.deploy_id): follower
            for follower in self._followers()
            for reader in follower.readers
        }
        if not watched:
            return
        try:
            listed = self.api.list_live()
        except (TransientError, UnreachableError, ApiError):
            return  # the followers report the API's troubles; this asks again next time
        for deployment in listed:
            follower = watched.get((deployment.project_id, deployment.deploy_id))
            if follower is None or deployment.deploy_id in self.stops:
                continue
            if deployment.terminal:
                self._announce(deployment, follower)

    def _announce(self, deployment: Deployment, follower: ProjectFollower) -> None:
        stop = Stop(
            deployment.project_id,
            deployment.deploy_id,
            follower.name or str(deployment.project_id),
            deployment.status,
            deployment.stopped,
        )
        ended = deployment.stopped.timestamp() if deployment.stopped else self._wall()
        self.stops[deployment.deploy_id] = (stop, ended)
        latest = follower.readers[-1].deploy_id == deployment.deploy_id
        stream = self._stderr or sys.stderr
        stream.write(stop.line(waiting=self._waits and latest and follower.pinned is None) + "\n")
        stream.flush()
        self._note(stop.object())

    def done(self) -> bool:
        followers = list(self._followers())
        if not followers or any(f.pinned is None for f in followers):
            return False
        finished = True
        for follower in followers:
            stopped = self.stops.get(follower.pinned or "")
            if stopped is None or self._wall() - stopped[1] < self.drain:
                return False
            # Only a read after the drain counts: not the polls that found nothing before.
            before = self._rechecked.setdefault(follower.pinned or "", follower.polls_caught_up)
            finished = finished and follower.polls_caught_up > before
        return finished

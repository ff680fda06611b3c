"""Projects, deployments and their project-wide numbered log lines; pure, no HTTP."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

"""The statuses ``/live/list`` accepts as a filter."""


class NotFound(LookupError):
    """No such project or deployment; the message is the API's error text."""


@dataclass(slots=True)
class Deployment:
    """One live deployment: its lines, visible (published) and not yet (pending)."""

    deploy_id: str
    launched: float
    status: str = "Running"
    stopped: float | None = None
    published: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    trimmed: int = 0  # its first published lines that retention removed


@dataclass(slots=True)
class Project:
    """A project's deployments in order; the rows it serves are theirs, oldest first.

    Retention removes rows from the front, and a removed row stays removed: each deployment
    counts its own. (A count from the project's start would bring one back when a late row
    is published into an earlier deployment that retention had already emptied.)

    With ``absolute`` numbers, removed rows keep their numbers: ``length`` and the offsets
    count every row ever published, and a window below the first row still served is short.
    Else the rows served are numbered from 0, so removing rows renumbers the rest.
    """

    project_id: int
    name: str
    deployments: list[Deployment] = field(default_factory=list)
    absolute: bool = False

    def served(self) -> int:
        return sum(len(d.published) - d.trimmed for d in self.deployments)

    def _numbered(self, d: Deployment) -> int:
        """How many numbers the deployment's rows take."""
        return len(d.published) - (0 if self.absolute else d.trimmed)

    def length(self) -> int:
        return sum(self._numbered(d) for d in self.deployments)

    def offset(self, deployment: Deployment) -> int:
        before = 0
        for other in self.deployments:
            if other is deployment:
                break
            before += self._numbered(other)
        return before

    def trim(self, n: int) -> None:
        """Remove the ``n`` oldest rows served (fewer if the project has fewer)."""
        for d in self.deployments:
            if n <= 0:
                return
            taken = min(n, len(d.published) - d.trimmed)
            d.trimmed += taken
            n -= taken

    def rows(self, start: int, end: int) -> list[str]:
        """Rows ``[start, end)`` as served, sliced deployment by deployment."""
        rows: list[str] = []
        base = 0
        for d in self.deployments:
            skip = 0 if self.absolute else d.trimmed  # numbers its removed rows no longer take
            top = base + len(d.published) - skip
            if top > start and base < end:
                lo, hi = max(start, base) - base, min(end, top) - base
                rows.extend(d.published[max(skip + lo, d.trimmed) : skip + hi])
            if top >= end:
                break
            base = top
        return rows


def utc_text(when: float | None) -> str | None:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, the way the API writes ``launched``/``stopped``."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S")


class Model:
    """Every project of the emulator, guarded by one lock."""

    def __init__(
        self,
        *,
        max_lines: int = 100_000,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        absolute: bool = False,
    ) -> None:
        self.max_lines = max_lines
        self.absolute = absolute  # trimming keeps the numbers of the rows left
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._projects: dict[int, Project] = {}
        self._launches: list[tuple[Project, Deployment]] = []

    def _project(self, project_id: int) -> Project:
        try:
            return self._projects[project_id]
        except KeyError:
            raise NotFound("Project not found") from None

    def _deployment(self, project: Project, deploy_id: str | None) -> Deployment:
        if not project.deployments:
            raise NotFound("No live deployment found")
        if deploy_id is None:
            return project.deployments[-1]
        for d in project.deployments:
            if d.deploy_id == deploy_id:
                return d
        raise NotFound(f"Algorithm {deploy_id} not found in project {project.project_id}")

    def _enforce(self, project: Project) -> None:
        project.trim(project.served() - self.max_lines)

    def add_project(self, project_id: int, name: str) -> None:
        with self._lock:
            if project_id in self._projects:
                raise ValueError(f"project {project_id} already exists")
            self._projects[project_id] = Project(project_id, name, absolute=self.absolute)

    def deploy(self, project_id: int) -> str:
        with self._lock:
            project = self._project(project_id)
            now = self._clock()
            if project.deployments and project.deployments[-1].status == "Running":
                project.deployments[-1].status = "Stopped"
                project.deployments[-1].stopped = now
            deployment = Deployment(f"L-{self._rng.getrandbits(128):032x}", launched=now)
            project.deployments.append(deployment)
            self._launches.append((project, deployment))
            return deployment.deploy_id

    def stop_deployment(self, project_id: int, status: str = "Stopped") -> None:
        with self._lock:
            deployment = self._deployment(self._project(project_id), None)
            deployment.status = status
            deployment.stopped = self._clock()

    def write(
        self, project_id: int, lines: Iterable[str], deploy_id: str | None, *, publish: bool
    ) -> None:
        with self._lock:
            project = self._project(project_id)
            deployment = self._deployment(project, deploy_id)
            if publish:
                deployment.published.extend(deployment.pending)
                deployment.pending.clear()
                deployment.published.extend(lines)
                self._enforce(project)
            else:
                deployment.pending.extend(lines)

    def publish(self, project_id: int | None = None) -> None:
        with self._lock:
            if project_id is None:
                projects = list(self._projects.values())
            else:
                projects = [self._project(project_id)]
            for project in projects:
                for d in project.deployments:
                    d.published.extend(d.pending)
                    d.pending.clear()
                self._enforce(project)

    def trim(self, project_id: int, n: int) -> None:
        with self._lock:
            self._project(project_id).trim(n)

    def published(self, project_id: int, deploy_id: str) -> list[str]:
        with self._lock:
            return list(self._deployment(self._project(project_id), deploy_id).published)

    def trimmed(self, project_id: int, deploy_id: str) -> int:
        """How many of the deployment's first published lines retention removed."""
        with self._lock:
            return self._deployment(self._project(project_id), deploy_id).trimmed

    def visible(self, project_id: int) -> list[str]:
        with self._lock:
            project = self._project(project_id)
            return project.rows(0, project.length())

    def length(self, project_id: int) -> int:
        with self._lock:
            return self._project(project_id).length()

    def deployment_offset(self, project_id: int, deploy_id: str) -> int:
        with self._lock:
            project = self._project(project_id)
            return project.offset(self._deployment(project, deploy_id))

    def read_logs(
        self,
        project_id: int,
        deploy_id: str,
        start: int,
        end: int,
        *,
        behind: int = 0,
        query: str | None = None,
    ) -> tuple[list[str], int, int]:
        """Rows ``[start, end)`` of the project, its length, and the deployment's offset;
        ``behind`` answers as the project was that many rows earlier (its newest rows not yet
        there, nothing trimmed since), as a lagging replica would. With a ``query`` (a
        keyword, any case), the rows and the length are those of the rows holding it, while
        the offset still counts every row before the deployment, as documented."""
        with self._lock:
            project = self._project(project_id)
            offset = project.offset(self._deployment(project, deploy_id))
            length = max(0, project.length() - behind)
            if query:
                keyword = query.casefold()
                rows = [row for row in project.rows(0, length) if keyword in row.casefold()]
                return rows[start:end], len(rows), min(offset, length)
            return project.rows(start, min(end, length)), length, min(offset, length)

    def latest(self, project_id: int, *, stale: bool = False) -> dict[str, object]:
        """The project's latest deployment, as ``/live/read`` describes it; ``stale``: the one
        before it (if any), as a replica that has not seen the redeploy yet would."""
        with self._lock:
            project = self._project(project_id)
            deployment = self._deployment(project, None)
            if stale and len(project.deployments) > 1:
                deployment = project.deployments[-2]
            return _describe(project, deployment)

    def launches(
        self, status: str | None = None, project_id: int | None = None
    ) -> list[dict[str, object]]:
        """Every deployment ever launched, oldest first, as ``/live/list`` describes them."""
        with self._lock:
            return [
                _describe(p, d)
                for p, d in self._launches
                if (status is None or d.status == status)
                and (project_id is None or p.project_id == project_id)
            ]

    def projects(self, project_id: int | None = None) -> list[tuple[int, str]]:
        with self._lock:
            if project_id is not None:
                p = self._project(project_id)
                return [(p.project_id, p.name)]
            return [(p.project_id, p.name) for p in self._projects.values()]

    def deploy_ids(self, project_id: int) -> list[str]:
        with self._lock:
            return [d.deploy_id for d in self._project(project_id).deployments]


def _describe(project: Project, deployment: Deployment) -> dict[str, object]:
    return {
        "projectId": project.project_id,
        "deployId": deployment.deploy_id,
        "status": deployment.status,
        "launched": utc_text(deployment.launched),
        "stopped": utc_text(deployment.stopped),
        "brokerage": "PaperBrokerage",
        "projectName": project.name,
    }

"""Projects, deployments and their project-wide numbered log lines; pure, no HTTP."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

LIST_STATUSES = ("Running", "Stopped", "RuntimeError", "Liquidated")
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


@dataclass(slots=True)
class Project:
    """A project's deployments in order, and how many of its oldest visible rows are gone."""

    project_id: int
    name: str
    deployments: list[Deployment] = field(default_factory=list)
    trimmed: int = 0

    def total(self) -> int:
        """Rows ever published by all deployments, trimmed ones included."""
        return sum(len(d.published) for d in self.deployments)

    def length(self) -> int:
        return self.total() - self.trimmed

    def offset(self, deployment: Deployment) -> int:
        before = 0
        for other in self.deployments:
            if other is deployment:
                break
            before += len(other.published)
        return max(0, before - self.trimmed)

    def rows(self, start: int, end: int) -> list[str]:
        """Visible rows ``[start, end)``, sliced deployment by deployment."""
        lo, hi = start + self.trimmed, min(end, self.length()) + self.trimmed
        rows: list[str] = []
        base = 0
        for d in self.deployments:
            top = base + len(d.published)
            if top > lo and base < hi:
                rows.extend(d.published[max(lo, base) - base : min(hi, top) - base])
            if top >= hi:
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
        self, *, max_lines: int = 100_000, seed: int = 0, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_lines = max_lines
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
        excess = project.length() - self.max_lines
        if excess > 0:
            project.trimmed += excess

    def add_project(self, project_id: int, name: str) -> None:
        with self._lock:
            if project_id in self._projects:
                raise ValueError(f"project {project_id} already exists")
            self._projects[project_id] = Project(project_id, name)

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
            project = self._project(project_id)
            project.trimmed += max(0, min(n, project.length()))

    def published(self, project_id: int, deploy_id: str) -> list[str]:
        with self._lock:
            return list(self._deployment(self._project(project_id), deploy_id).published)

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
        self, project_id: int, deploy_id: str, start: int, end: int
    ) -> tuple[list[str], int, int]:
        """Rows ``[start, end)`` of the project, its length, and the deployment's offset."""
        with self._lock:
            project = self._project(project_id)
            offset = project.offset(self._deployment(project, deploy_id))
            return project.rows(start, end), project.length(), offset

    def latest(self, project_id: int) -> dict[str, object]:
        """The project's latest deployment, as ``/live/read`` describes it."""
        with self._lock:
            project = self._project(project_id)
            return _describe(project, self._deployment(project, None))

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

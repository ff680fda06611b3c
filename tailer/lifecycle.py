"""The daemon's life as an operator reads it in the journal: started, each deployment begun
and ended, reopened, stopping."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from tailer import __version__, logs
from tailer.config import Config
from tailer.errors import QcTailError
from tailer.follower import ProjectFollower
from tailer.metrics import Tally

log = logs.get_logger(__name__)


class Lifecycle:
    """Says when a deployment begins and ends being followed, once for the whole process.

    Each pipeline (files, Loki) has its own follower of a project; a deployment is followed
    from the first pipeline's follower that reads it until the last one's lets it go (drained
    after a redeploy, or the project dropped), so each event is said once. The count of
    deployments followed goes to ``metrics``, and a dropped project's series go with it.
    """

    def __init__(self, metrics: Tally | None = None) -> None:
        self.metrics = metrics
        self._lock = threading.Lock()
        self._readers: dict[tuple[str, int], frozenset[str]] = {}  # (pipeline, project)
        self._followed: dict[tuple[int, str], set[str]] = {}  # deployment -> pipelines

    def started(self, config: Config, outputs: Sequence[str]) -> None:
        discovery = config.discovery
        k, n = discovery.shard
        log.info(
            "started",
            version=__version__,
            follows=[entry.project_id for entry in config.follows],
            discovery=("shard " + f"{k}/{n}" if n > 1 else "on") if discovery.enabled else "off",
            outputs=list(outputs),
        )

    def observe(self, pipeline: str, follower: ProjectFollower) -> None:
        """After a follower began or polled: the deployments it reads now."""
        self._update(pipeline, follower, frozenset(r.deploy_id for r in follower.readers))

    def rhythm(self, follower: ProjectFollower, period: float | None) -> None:
        """The publishing period its polls follow now (None: none, polled at the interval)."""
        if self.metrics is not None:
            name = follower.name or str(follower.project_id)
            self.metrics.period(follower.project_id, name, period)

    def dropped(self, pipeline: str, follower: ProjectFollower) -> None:
        """The pipeline no longer follows the project."""
        self._update(pipeline, follower, frozenset())
        with self._lock:
            gone = not any(p == follower.project_id for p, _ in self._followed)
        if gone and self.metrics is not None:
            self.metrics.forget(follower.project_id)

    def _update(self, pipeline: str, follower: ProjectFollower, now: frozenset[str]) -> None:
        project_id = follower.project_id
        key = (pipeline, project_id)
        if self._readers.get(key, frozenset()) == now:
            return
        begun, ended = [], []
        with self._lock:
            before = self._readers.get(key, frozenset())
            if now:
                self._readers[key] = now
            else:
                self._readers.pop(key, None)
            for deploy_id in sorted(now - before):
                pipelines = self._followed.setdefault((project_id, deploy_id), set())
                if not pipelines:
                    begun.append(deploy_id)
                pipelines.add(pipeline)
            for deploy_id in sorted(before - now):
                pipelines = self._followed.get((project_id, deploy_id), set())
                pipelines.discard(pipeline)
                if not pipelines:
                    self._followed.pop((project_id, deploy_id), None)
                    ended.append(deploy_id)
            count = len(self._followed)
        if self.metrics is not None:
            self.metrics.deployments(count)
        name = follower.name or str(project_id)
        for deploy_id in begun:
            log.info("deployment_started", project=project_id, deploy=deploy_id, name=name)
        if ended:
            statuses = _statuses(follower)
            for deploy_id in ended:
                status = statuses.get(deploy_id, "unknown")
                log.info(
                    "deployment_ended",
                    project=project_id,
                    deploy=deploy_id,
                    name=name,
                    status=status,
                )

    def reopened(self) -> None:
        log.info("reopened", hint="output files are reopened at their next write (SIGHUP)")

    def stopping(self) -> None:
        lines = self.metrics.lines_by_output() if self.metrics is not None else {}
        log.info("stopping", lines=lines, deployments=len(self._followed))


def _statuses(follower: ProjectFollower) -> dict[str, str]:
    """Each deployment's status as the API lists it now (one request for the project)."""
    try:
        listed = follower.api.list_live(project_id=follower.project_id)
    except QcTailError as exc:
        log.debug("status_unknown", project=follower.project_id, error=str(exc))
        return {}
    return {deployment.deploy_id: deployment.status for deployment in listed}

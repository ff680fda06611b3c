"""Discovery: which projects have a Running deployment to follow, asked every few minutes."""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from tailer.api import QcApi
from tailer.config import DiscoveryConfig
from tailer.errors import ApiError, TransientError, UnreachableError

log = structlog.get_logger(__name__)


class Discovery:
    """Lists the account's Running deployments (one request for the whole fleet)."""

    def __init__(
        self,
        api: QcApi,
        config: DiscoveryConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.config = config
        self._clock = clock
        self.due = 0.0
        self._failing = False

    def running(self) -> dict[int, str] | None:
        """Projects with a Running deployment now, and its deploy id; None if the API could
        not say."""
        self.due = self._clock() + self.config.interval
        try:
            deployments = self.api.list_live(status="Running")
        except (TransientError, UnreachableError, ApiError) as exc:
            if not self._failing:
                log.warning("discovery_failing", error=str(exc), hint="will ask again")
                self._failing = True
            return None
        if self._failing:
            log.info("discovery_recovered")
            self._failing = False
        return {d.project_id: d.deploy_id for d in deployments if self.wants(d.project_id)}

    def wants(self, project_id: int) -> bool:
        """Whether discovery may follow the project (``discovery.projects`` limits it)."""
        return not self.config.projects or project_id in self.config.projects

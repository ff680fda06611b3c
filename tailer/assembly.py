"""Builds the running objects (API client, followers, outputs) from a validated Config."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from tailer.api import QcApi
from tailer.auth import QcAuth, ServerClock
from tailer.budget import RequestBudget
from tailer.config import Config, FollowConfig
from tailer.cursor import Cursor
from tailer.errors import ConfigError
from tailer.export import Exporter
from tailer.export_quota import ExportQuota
from tailer.follower import ProjectFollower, Start
from tailer.metrics import Tally
from tailer.prefetch import Prefetcher
from tailer.retry import RetryPolicy
from tailer.shutdown import Shutdown

ONE_SHOT = RetryPolicy(max_time=60.0, cap=10.0)
"""For commands that answer and exit: a minute of retries, then exit 69."""

FOLLOWING = RetryPolicy(max_attempts=4, cap=30.0)
"""For followers: a few quick retries per request; the scheduler backs off beyond that."""


def build_api(
    config: Config,
    shutdown: Shutdown,
    policy: RetryPolicy = ONE_SHOT,
    metrics: Tally | None = None,
    cache_ttl: float = 0.0,
) -> QcApi:
    """The QuantConnect client, or a ConfigError saying which credential is missing;
    ``cache_ttl``: how long one answer serves an identical read (see ``QcApi.read_logs``)."""
    api = config.api
    if api.user_id is None:
        raise ConfigError(
            "no QuantConnect user id: set QC_USER_ID or api.user_id", key="api.user_id"
        )
    if not api.api_token:
        raise ConfigError(
            "no QuantConnect API token: set QC_API_TOKEN, api.api_token_file, "
            "or the systemd credential qc-api-token",
            key="api.api_token_file",
        )
    return QcApi(
        api.base_url,
        QcAuth(api.user_id, api.api_token, ServerClock()),
        timeout=api.timeout,
        policy=policy,
        budget=RequestBudget(api.max_in_flight, api.max_requests_per_minute, sleep=shutdown.sleep),
        sleep=shutdown.sleep,
        stop_event=shutdown.event,
        ca_bundle=api.ca_bundle,
        metrics=metrics,
        cache_ttl=cache_ttl,
    )


def build_exporter(api: QcApi, config: Config, quota_file: Path | None = None) -> Exporter:
    """Large backlogs through the export endpoint, as ``api.export`` allows, within
    ``api.export_per_30min`` (counted in ``quota_file`` across restarts, if given)."""
    quota = ExportQuota(config.api.export_per_30min, quota_file)
    return Exporter(api, quota, enabled=config.api.export == "auto")


def follower_factory(
    api: QcApi,
    config: Config,
    saved: Mapping[tuple[int, str], Cursor],
    clock: Callable[[], float] = time.monotonic,
    exporter: Exporter | None = None,
) -> Callable[..., ProjectFollower]:
    """Makes the follower of one follow entry, resuming from its saved cursors.

    ``make(entry, cursors, others)``: ``cursors`` are the project's cursors as saved at this
    moment, for a follower made later in the run (a project discovered again; ``saved``, read
    at start, is stale by then); ``others`` are deployments that other follow entries read
    (pinned ones).
    """

    prefetcher = Prefetcher(config.api.max_in_flight)

    def make(
        entry: FollowConfig,
        cursors: Mapping[tuple[int, str], Cursor] | None = None,
        others: frozenset[str] = frozenset(),
    ) -> ProjectFollower:
        known = saved if cursors is None else cursors
        mine = {d: c for (p, d), c in known.items() if p == entry.project_id}
        return ProjectFollower(
            api,
            entry.project_id,
            name=entry.name,
            deploy_id=entry.deploy_id,
            start=Start(entry.start),
            saved=mine,
            others=others,
            drain=config.poll.drain,
            clock=clock,
            prefetcher=prefetcher,
            exporter=exporter,
        )

    return make

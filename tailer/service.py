"""The daemon's life: lock the state, resume the cursors, run the outputs, talk to systemd."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tailer import logs
from tailer.api import QcApi
from tailer.assembly import build_exporter, follower_factory
from tailer.config import Config, FollowConfig
from tailer.cursor import MarkError
from tailer.daemon import Notifier, detached
from tailer.directories import prepare
from tailer.discovery import Discovery
from tailer.errors import StateError, WriteFailedError
from tailer.export import Exporter
from tailer.follower import ProjectFollower
from tailer.health import Health
from tailer.lifecycle import Lifecycle
from tailer.metrics import Metrics, Tally
from tailer.pipeline import Pipeline
from tailer.scheduler import MakeFollower, Scheduler
from tailer.shutdown import Shutdown
from tailer.sinks import Sink
from tailer.sinks.files import DIR_MODE, FileSink
from tailer.sinks.loki import LokiSink
from tailer.sinks.stdout import StdoutSink
from tailer.store import CursorStore, StateLock
from tailer.workers import Workers

log = logs.get_logger(__name__)

EXPORT_QUOTA_FILE = "export-quota.json"
"""In the state directory: the export calls spent lately, counted across restarts."""


def serve(
    config: Config,
    api: QcApi,
    shutdown: Shutdown,
    *,
    once: bool,
    detach: Path | None,
    log_file: Path,
    notifier: Notifier,
) -> None:
    """Follow everything the config names until stopped (or, ``once``, until caught up).

    The state lock is taken before detaching, so a second instance is refused on the
    terminal that started it; everything else happens in the (possibly detached) process.
    """
    lock = StateLock(config.state.dir)
    lock.acquire()
    try:
        daemonized = (
            detached(config.state.dir, detach, log_file, keep=lock.fds())
            if detach is not None
            else contextlib.nullcontext()
        )
        with daemonized:
            lock.stamp()
            _follow(config, api, shutdown, once=once, notifier=notifier)
    finally:
        lock.release()


def kept_metrics(config: Config) -> Tally:
    """Prometheus series where they are served (``metrics.listen``); else only the counts
    the stop summary needs."""
    return Metrics() if config.metrics.listen is not None else Tally()


def _follow(
    config: Config, api: QcApi, shutdown: Shutdown, *, once: bool, notifier: Notifier
) -> None:
    metrics = api.metrics or kept_metrics(config)
    lifecycle = Lifecycle(metrics)
    pipelines, make_follower = _pipelines(config, api, shutdown, metrics=metrics)
    verdicts: list[Callable[[], str | None]] = []  # the workers', once they run
    listen = config.metrics.listen
    listener = None
    shutdown.on_hangup(notifier.reloading)
    shutdown.on_hangup(lifecycle.reopened)
    discovery = Discovery(api, config.discovery) if config.discovery.enabled else None
    try:
        if listen is not None:
            from tailer.metrics_listener import MetricsListener  # a web server, if asked for

            assert isinstance(metrics, Metrics)  # kept_metrics: series where they are served
            listener = MetricsListener(listen, metrics, lambda: verdicts[0]() if verdicts else None)
        lifecycle.started(config, list(metrics.lines_by_output()))
        if once:  # pipeline by pipeline: the files first, then Loki
            scheduler = _scheduler(
                config, pipelines, shutdown, discovery, make_follower, lifecycle=lifecycle
            )
            with shutdown.beating(notifier.watchdog, notifier.watchdog_interval):
                scheduler.poll_once()
        else:
            _work(
                config, pipelines, shutdown, discovery, make_follower, notifier, lifecycle, verdicts
            )
    finally:
        lifecycle.stopping()
        notifier.stopping()
        if listener is not None:
            listener.close()
        for pipeline in pipelines:
            pipeline.close()


def _scheduler(
    config: Config,
    pipelines: list[Pipeline],
    shutdown: Shutdown,
    discovery: Discovery | None,
    make_follower: MakeFollower,
    health: Health | None = None,
    lifecycle: Lifecycle | None = None,
) -> Scheduler:
    return Scheduler(
        pipelines,
        shutdown,
        interval=config.poll.interval,
        max_interval=config.poll.max_interval,
        drain=config.poll.drain,
        discovery=discovery,
        make_follower=make_follower,
        health=health,
        polls=config.api.max_in_flight,  # a slow deployment holds back no other's polls
        lifecycle=lifecycle,
    )


def _work(
    config: Config,
    pipelines: list[Pipeline],
    shutdown: Shutdown,
    discovery: Discovery | None,
    make_follower: MakeFollower,
    notifier: Notifier,
    lifecycle: Lifecycle,
    verdicts: list[Callable[[], str | None]],
) -> None:
    """Each pipeline on its own worker (a Loki that hangs holds back no file), sharing one
    discovery; this thread talks to systemd: READY once some poll succeeded, STATUS, and
    WATCHDOG while every worker shows life. /healthz applies the watchdog's rule, with
    ``metrics.stall`` when systemd keeps no watchdog."""
    health = Health()
    schedulers = []
    for n, pipeline in enumerate(pipelines):
        view = discovery.share() if discovery is not None and n else discovery
        scheduler = _scheduler(config, [pipeline], shutdown, view, make_follower, health, lifecycle)
        schedulers.append(scheduler)
    workers = Workers(schedulers, shutdown, stall=notifier.watchdog_interval)
    stall = notifier.watchdog_interval or config.metrics.stall
    verdicts.append(lambda: workers.stalled(stall))

    def tick() -> None:
        if workers.alive():
            notifier.watchdog()
        if notifier.enabled:
            status = workers.status()
            if workers.healthy_once:
                notifier.ready(status)
            notifier.status(status)

    workers.run(on_tick=tick)


def shared_reads(config: Config) -> float:
    """How long one ``/live/logs/read`` answer may serve an identical read: files (and
    stdout) and Loki, each on its own thread, read the same windows at nearly the same time,
    and one request then serves both."""
    output = config.output
    both = output.loki is not None and bool(output.directory or output.stdout)
    return min(1.0, config.poll.interval / 2) if both else 0.0


def _pipelines(
    config: Config,
    api: QcApi,
    shutdown: Shutdown,
    clock: Callable[[], float] = time.monotonic,
    metrics: Tally | None = None,
) -> tuple[list[Pipeline], MakeFollower]:
    """The pipelines, and how a project found running gets a follower in each.

    Files and stdout share cursors (stdout last: it gets a line once files have it);
    ``clock`` times the followers' drains; ``metrics`` counts what each output gets."""
    output = config.output
    outputs: list[Sink] = []
    names: list[str] = []  # as a user knows them, in messages
    if output.directory:
        prepare(output.directory, DIR_MODE, "output.directory")  # at start: a clear error
        files = FileSink(output.directory)
        shutdown.on_hangup(files.reopen)
        outputs.append(files)
        names.append("files")
    if output.stdout:
        several = len(config.follows) > 1 or config.discovery.enabled  # else: on a redeploy
        prefix = True if several else None
        alone = not output.directory and output.loki is None
        closed = _stdout_was_the_only_output if alone else _stdout_closed
        outputs.append(
            StdoutSink(sys.stdout, format=output.format, prefix=prefix, on_closed=closed)
        )
        names.append("stdout")
    pipelines = []
    makers: dict[Pipeline, Callable[..., ProjectFollower]] = {}
    exporter = build_exporter(api, config, config.state.dir / EXPORT_QUOTA_FILE)  # one for all
    if outputs:
        name = " and ".join(names)
        store = CursorStore(config.state.dir)
        pipelines.append(
            _pipeline(name, outputs, store, config, api, clock, metrics, names, exporter, makers)
        )
    if output.loki is not None:  # its own cursors: a Loki outage must not hold the files back
        loki = LokiSink(output.loki, sleep=shutdown.sleep)
        store = CursorStore(config.state.dir / "loki")
        # interruptible: a push cut short by a stop is re-pushed alike after the restart
        pipelines.append(
            _pipeline(
                "Loki",
                [loki],
                store,
                config,
                api,
                clock,
                metrics,
                ["loki"],
                exporter,
                makers,
                interruptible=True,
                counts_gaps=not pipelines,  # the files' pipeline reads the same gaps
            )
        )
    if metrics is not None:
        metrics.outputs(label for pipeline in pipelines for label in pipeline.labels)

    def make_follower(
        pipeline: Pipeline, project_id: int, others: frozenset[str]
    ) -> ProjectFollower:
        entry = FollowConfig(project_id, start=config.discovery.start)
        return makers[pipeline](entry, pipeline.saved(project_id), others)

    return pipelines, make_follower


def _stdout_closed() -> None:
    """The reader of stdout went away (the journal, a pipe): unlike ``tail | head``, not an
    end, since the other outputs still work; stdout gets no more lines until a restart."""
    log.error(
        "stdout_closed",
        hint="nothing reads stdout any more; the files and Loki go on without it until a restart",
    )


def _stdout_was_the_only_output() -> None:
    raise WriteFailedError(
        "stdout was closed: nothing reads the lines any more, and it is the only output"
    )


def _pipeline(
    name: str,
    outputs: list[Sink],
    store: CursorStore,
    config: Config,
    api: QcApi,
    clock: Callable[[], float],
    metrics: Tally | None,
    labels: list[str],
    exporter: Exporter | None,
    makers: dict[Pipeline, Callable[..., ProjectFollower]],
    *,
    interruptible: bool = False,
    counts_gaps: bool = True,
) -> Pipeline:
    saved = store.load_all()
    for output in outputs:
        try:
            output.recover(saved.values())
        except MarkError as exc:  # a cursor file edited by hand: as if it did not parse
            path = store.path(exc.project_id, exc.deploy_id)
            raise StateError(exc.reason, path=str(path)) from None
    make = follower_factory(api, config, saved, clock, exporter)  # one prefetcher a pipeline
    pipeline = Pipeline(
        outputs,
        [make(entry) for entry in config.follows],
        name=name,
        save=store.save,
        load=store.load_project,
        saved=saved.keys(),
        unfinished=[key for key, cursor in saved.items() if not cursor.done],
        interruptible=interruptible,
        metrics=metrics,
        labels=labels,
        counts_gaps=counts_gaps,
    )
    makers[pipeline] = make
    return pipeline

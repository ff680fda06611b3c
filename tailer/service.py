"""The daemon's life: lock the state, resume the cursors, run the outputs, talk to systemd."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tailer.api import QcApi
from tailer.assembly import follower_factory
from tailer.config import Config, FollowConfig
from tailer.daemon import Notifier, detached
from tailer.discovery import Discovery
from tailer.pipeline import Pipeline
from tailer.scheduler import Scheduler
from tailer.shutdown import Shutdown
from tailer.sinks import Sink
from tailer.sinks.files import FileSink
from tailer.sinks.loki import LokiSink
from tailer.sinks.stdout import StdoutSink
from tailer.store import CursorStore, StateLock


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


def _follow(
    config: Config, api: QcApi, shutdown: Shutdown, *, once: bool, notifier: Notifier
) -> None:
    pipelines = _pipelines(config, api, shutdown)
    shutdown.on_hangup(notifier.reloading)
    scheduler = Scheduler(
        pipelines,
        shutdown,
        interval=config.poll.interval,
        max_interval=config.poll.max_interval,
        drain=config.poll.drain,
        discovery=Discovery(api, config.discovery) if config.discovery.enabled else None,
    )

    shutdown.heartbeat = notifier.watchdog
    shutdown.heartbeat_every = notifier.watchdog_interval

    def heartbeat() -> None:
        notifier.watchdog()
        if not notifier.enabled:
            return
        status = scheduler.status()
        if scheduler.healthy_once:
            notifier.ready(status)
        notifier.status(status)

    def progress() -> None:  # a group delivered: alive, and ready once the first one is
        notifier.watchdog()
        if notifier.enabled and not notifier.is_ready and scheduler.healthy_once:
            notifier.ready(scheduler.status())

    try:
        if once:
            scheduler.poll_once()
        else:
            scheduler.run(on_idle=heartbeat, on_progress=progress)
    finally:
        notifier.stopping()
        for pipeline in pipelines:
            pipeline.close()


def _pipelines(
    config: Config,
    api: QcApi,
    shutdown: Shutdown,
    clock: Callable[[], float] = time.monotonic,
) -> list[Pipeline]:
    """Files and stdout share cursors (stdout last: it gets a line once files have it);
    ``clock`` times the followers' drains."""
    output = config.output
    outputs: list[Sink] = []
    if output.directory:
        files = FileSink(output.directory)
        shutdown.on_hangup(files.reopen)
        outputs.append(files)
    if output.stdout:
        several = len(config.follows) > 1 or config.discovery.enabled  # else: on a redeploy
        prefix = True if several else None
        outputs.append(StdoutSink(sys.stdout, format=output.format, prefix=prefix))
    pipelines = []
    if outputs:
        pipelines.append(
            _pipeline("main", outputs, CursorStore(config.state.dir), config, api, clock)
        )
    if output.loki is not None:  # its own cursors: a Loki outage must not hold the files back
        loki = LokiSink(output.loki, sleep=shutdown.sleep)
        store = CursorStore(config.state.dir / "loki")
        # interruptible: a push cut short by a stop is re-pushed alike after the restart
        pipelines.append(_pipeline("loki", [loki], store, config, api, clock, interruptible=True))
    if len(pipelines) > 1:
        api.cache_ttl = min(1.0, config.poll.interval / 2)  # one request serves both pipelines
    return pipelines


def _pipeline(
    name: str,
    outputs: list[Sink],
    store: CursorStore,
    config: Config,
    api: QcApi,
    clock: Callable[[], float],
    *,
    interruptible: bool = False,
) -> Pipeline:
    saved = store.load_all()
    for output in outputs:
        output.recover(saved.values())
    make = follower_factory(api, config, saved, clock)
    return Pipeline(
        outputs,
        [make(entry) for entry in config.follows],
        name=name,
        save=store.save,
        make_follower=lambda pid, others: make(
            FollowConfig(pid, start=config.discovery.start), store.load_all(), others
        ),
        saved=saved.keys(),
        interruptible=interruptible,
    )

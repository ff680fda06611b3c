"""The daemon's life: lock the state, resume the cursors, run the outputs, talk to systemd."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from tailer.api import QcApi
from tailer.assembly import checkpoint, follower_factory
from tailer.config import Config, FollowConfig
from tailer.daemon import Notifier, detached
from tailer.discovery import Discovery
from tailer.scheduler import Scheduler
from tailer.shutdown import Shutdown
from tailer.sinks import Sink
from tailer.sinks.files import FileSink
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
    output = config.output
    store = CursorStore(config.state.dir)
    saved = store.load_all()
    files = FileSink(output.directory) if output.directory else None
    outputs: list[Sink] = []
    if files is not None:
        files.recover(saved.values())
        shutdown.on_hangup(files.reopen)
        outputs.append(files)
    if output.stdout:  # last: a line reaches stdout only once the durable outputs have it
        prefix = len(config.follows) > 1 or config.discovery.enabled
        outputs.append(StdoutSink(sys.stdout, format=output.format, prefix=prefix))
    shutdown.on_hangup(notifier.reloading)
    make = follower_factory(api, config, saved)
    scheduler = Scheduler(
        [make(entry) for entry in config.follows],
        outputs,
        shutdown,
        interval=config.poll.interval,
        max_interval=config.poll.max_interval,
        drain=config.poll.drain,
        save=checkpoint(store, files),
        discovery=Discovery(api, config.discovery) if config.discovery.enabled else None,
        make_follower=lambda pid: make(FollowConfig(pid, start=config.discovery.start)),
    )

    shutdown.heartbeat = notifier.watchdog
    shutdown.heartbeat_every = notifier.watchdog_interval

    def heartbeat() -> None:
        notifier.watchdog()
        if scheduler.healthy_once:
            notifier.ready(scheduler.status())
        notifier.status(scheduler.status())

    try:
        if once:
            scheduler.poll_once()
        else:
            scheduler.run(on_idle=heartbeat)
    finally:
        notifier.stopping()
        if files is not None:
            files.close()

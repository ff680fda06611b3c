"""``tail``: its targets followed to stdout on the daemon's scheduler, with a user's comforts
(colour, filters, stop notices, progress)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields, replace
from typing import TextIO

from tailer.api import QcApi
from tailer.assembly import build_exporter
from tailer.colour import Painter
from tailer.config import Config, LokiConfig, StartAt
from tailer.discovery import Discovery
from tailer.follower import ProjectFollower, Start
from tailer.notices import StatusWatch
from tailer.pipeline import Pipeline
from tailer.prefetch import Prefetcher
from tailer.scheduler import Scheduler
from tailer.shutdown import Shutdown
from tailer.since import Since
from tailer.sinks import Sink
from tailer.sinks.grep import GrepSink
from tailer.sinks.progress import ProgressSink
from tailer.sinks.stdout import StdoutSink
from tailer.targets import resolve

LAST_TEN = Start(StartAt.LAST, 10)


@dataclass(frozen=True, slots=True)
class TailOptions:
    """What the user asked of ``tail``, parsed."""

    targets: tuple[str, ...] = ()
    all: bool = False
    deploy: str | None = None
    follow: bool = False
    start: Start = LAST_TEN
    format: str = "text"
    prefix: bool | None = None
    interval: float | None = None
    colour: bool = False
    grep: str | None = None
    since: Since | None = None
    progress: bool = False


def tail(
    config: Config,
    api: QcApi,
    shutdown: Shutdown,
    options: TailOptions,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
) -> int:
    """Print the targets' lines (and, with ``follow``, keep following them); 0 when done."""
    targets = resolve(api, options.targets)
    several = options.all or len(targets) > 1
    prefix = options.prefix if options.prefix is not None else (True if several else None)
    shown = StdoutSink(
        stdout, format=options.format, prefix=prefix, paint=Painter() if options.colour else None
    )
    outputs: list[Sink] = [GrepSink(shown, options.grep) if options.grep else shown]
    start = _start(config, options)
    prefetcher = Prefetcher(config.api.max_in_flight)
    exporter = build_exporter(api, config)  # its quota counted in this process only
    began = [False]  # whether the first turn is over: followers found later start at their start

    def make(project_id: int, name: str | None = None) -> ProjectFollower:
        return ProjectFollower(
            api,
            project_id,
            name=name,
            deploy_id=options.deploy,
            start=Start(StartAt.DEPLOYMENT) if began[0] else start,
            drain=config.poll.drain,
            wait_for_deployment=options.follow,
            prefetcher=prefetcher,
            snapshot=not options.follow,
            exporter=exporter,
        )

    followers = [make(target.project_id, target.name) for target in targets]
    interval = options.interval or config.poll.interval
    discovery = None
    if options.all:
        every = min(config.discovery.interval, interval)
        discovery = Discovery(api, replace(config.discovery, enabled=True, interval=every))
    if options.progress:  # after the lines: the progress line follows what is on screen
        outputs.append(ProgressSink(stderr, lambda: _left(scheduler)))
    pipeline = Pipeline(outputs, followers, name="stdout")
    scheduler = Scheduler(
        [pipeline],
        shutdown,
        interval=interval,
        max_interval=interval,  # someone is watching: no idle backoff
        rhythmic=options.interval is None,  # --interval: a fixed pace
        learn_fast=True,
        drain=config.poll.drain,
        discovery=discovery,
        make_follower=lambda _pipeline, project_id, _others: make(project_id),
        polls=config.api.max_in_flight if several else 1,  # a slow target holds back no other
    )
    try:
        if not options.follow:
            scheduler.poll_once()
            return 0
        watch = StatusWatch(
            api,
            lambda: [slot.follower for slot in scheduler.slots],
            interval=interval,
            drain=config.poll.drain,
            note=shown.note,
            stderr=stderr,
            waits=not options.all,
        )

        def idle() -> None:
            began[0] = True
            watch.check()
            if watch.done():  # a pinned deployment ended, and its late lines are in
                shutdown.event.set()

        scheduler.run(on_idle=idle)
        return 0
    finally:
        pipeline.close()


def _start(config: Config, options: TailOptions) -> Start:
    if options.since is None:
        return options.start
    loki = config.output.loki
    zone = loki.timezone if loki is not None else _default_zone()
    return Start(StartAt.SINCE, since=options.since.moment(zone))


def _default_zone() -> str:
    """The algorithm time zone the config assumes when it names none."""
    default = next(f.default for f in fields(LokiConfig) if f.name == "timezone")
    return str(default)


def _left(scheduler: Scheduler) -> int:
    """Lines the followers' latest deployments still have to read, as last seen."""
    left = 0
    for slot in scheduler.slots:
        readers = slot.follower.readers
        if readers:
            reader = readers[-1]
            left += max(0, reader.length - reader.ahead.line_number(reader.offset))
    return left

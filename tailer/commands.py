"""What each command does, given parsed arguments: wiring and a loop, nothing more."""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from tailer import service
from tailer.api import QcApi
from tailer.assembly import FOLLOWING, ONE_SHOT, build_api
from tailer.config import Config, load_config
from tailer.daemon import Notifier
from tailer.errors import ConfigError, NotFoundError
from tailer.follower import ProjectFollower, Start
from tailer.pipeline import Pipeline
from tailer.prefetch import Prefetcher
from tailer.scheduler import Scheduler
from tailer.shutdown import Shutdown
from tailer.sinks.stdout import StdoutSink

Env = Mapping[str, str]


def load(args: argparse.Namespace, env: Env) -> Config:
    """The config named by --config or $QC_TAIL_CONFIG (else defaults), plus --base-url."""
    path = getattr(args, "config", None) or env.get("QC_TAIL_CONFIG")
    overrides = dict(env)
    if getattr(args, "base_url", None):
        overrides["QC_BASE_URL"] = args.base_url
    return load_config(Path(path) if path else None, overrides)


def tail(args: argparse.Namespace, shutdown: Shutdown, env: Env) -> int:
    config = load(args, env)
    api = build_api(config, shutdown, FOLLOWING if args.follow else ONE_SHOT)
    start = Start("deployment") if args.from_start else args.lines
    follower = ProjectFollower(
        api,
        args.project_id,
        deploy_id=args.deploy,
        start=start,
        drain=config.poll.drain,
        wait_for_deployment=args.follow,
        prefetcher=Prefetcher(config.api.max_in_flight),
        snapshot=not args.follow,
    )
    sink = StdoutSink(sys.stdout, format=args.format, prefix=args.prefix)
    interval = args.interval or config.poll.interval
    scheduler = Scheduler(  # interactive: no idle backoff; --interval: a fixed pace
        [Pipeline([sink], [follower])],
        shutdown,
        interval=interval,
        max_interval=interval,
        rhythmic=args.interval is None,
        learn_fast=True,
    )
    if args.follow:
        scheduler.run()
    else:
        scheduler.poll_once()
    return 0


def run(args: argparse.Namespace, shutdown: Shutdown, env: Env) -> int:
    """The daemon: every configured and discovered deployment, to every configured output."""
    config = load(args, env)
    output = config.output
    if not (output.stdout or output.directory or output.loki):
        raise ConfigError(
            "no output: set output.stdout = true, output.directory, or [output.loki]",
            path=str(config.source) if config.source else None,
            key="output",
        )
    if not config.follows and not config.discovery.enabled:
        raise ConfigError(
            "nothing to follow: add [[follow]] entries or set discovery.enabled = true",
            path=str(config.source) if config.source else None,
            key="follow",
        )
    pidfile = Path(args.pidfile).absolute() if args.pidfile else None  # cli: --detach has one
    log_file = Path(args.log_file).absolute() if args.log_file else None
    service.serve(
        config,
        build_api(config, shutdown, FOLLOWING),
        shutdown,
        once=args.once,
        detach=pidfile if args.detach else None,
        log_file=log_file or config.state.dir / "qc-tail.log",
        notifier=Notifier(env),
    )
    return 0


def list_deployments(args: argparse.Namespace, shutdown: Shutdown, env: Env) -> int:
    api = build_api(load(args, env), shutdown)
    deployments = api.list_live(status=args.status)
    names = _project_names(api, {d.project_id: d.project_name for d in deployments})
    rows = [
        {
            "project_id": d.project_id,
            "name": names.get(d.project_id) or "",
            "deploy_id": d.deploy_id,
            "status": d.status,
            "launched": d.launched.isoformat() if d.launched else None,
            "stopped": d.stopped.isoformat() if d.stopped else None,
        }
        for d in deployments
    ]
    if args.format == "json":
        sys.stdout.writelines(json.dumps(row) + "\n" for row in rows)
        return 0
    header = ("PROJECT", "NAME", "DEPLOY", "STATUS", "LAUNCHED")
    table = [header] + [
        (
            str(r["project_id"]),
            str(r["name"]),
            str(r["deploy_id"]),
            str(r["status"]),
            str(r["launched"] or "-"),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def check(args: argparse.Namespace, shutdown: Shutdown, env: Env) -> int:
    """The config, the directories, Loki, the credentials and what would be followed: each
    said as found; the exit code is the first problem's (a refused token ends it at once)."""
    from tailer.preflight import check_outputs  # imported on use: requests costs 60 ms

    config = load(args, env)
    print(f"config: {config.source or '(none: defaults and environment)'}: ok")
    problem = check_outputs(config, print) if config.source else 0  # no file: no `run`
    api = build_api(config, shutdown)
    api.authenticate()
    skew = api.auth.clock.offset  # the correction signed with (a sub-second skew is noise)
    print(f"credentials: ok (user {config.api.user_id}, clock skew {round(skew)} s)")
    for entry in config.follows:
        try:
            current = api.read_live(entry.project_id)
        except NotFoundError:
            print(f"follow: project {entry.project_id}: no live deployment yet (will wait)")
            continue
        name = entry.name or current.project_name or entry.project_id
        target = entry.deploy_id or f"{current.deploy_id} (current, across redeploys)"
        if entry.deploy_id and entry.deploy_id != current.deploy_id:  # its status is not this
            target += f" (pinned; the current deployment is {current.deploy_id})"
            print(f"follow: project {entry.project_id} [{name}]: {target}")
            continue
        print(f"follow: project {entry.project_id} [{name}]: {target}, status {current.status}")
    if config.discovery.enabled:
        running = api.list_live(status="Running")
        limit = set(config.discovery.projects)
        found = [d for d in running if not limit or d.project_id in limit]
        print(f"discovery: {len(found)} running deployment(s) would be followed")
        for d in found:
            print(f"  project {d.project_id} [{d.project_name or '-'}]: {d.deploy_id}")
    return problem


def demo(args: argparse.Namespace, shutdown: Shutdown, env: Env) -> int:
    from tailer.emulator import Emulator, Scenery

    token = secrets.token_hex(16)
    with Emulator(user_id=1234, api_token=token, publish_interval=1.0).start() as emu:
        scenery = Scenery(emu, seed=secrets.randbelow(2**31))
        scenery.start()
        try:
            config = load_config(None, {})
            config = dataclasses.replace(
                config,
                api=dataclasses.replace(
                    config.api, base_url=emu.base_url, user_id=1234, api_token=token
                ),
            )
            api = build_api(config, shutdown, FOLLOWING)
            followers = [
                ProjectFollower(api, project_id, start=Start("last", 3))
                for project_id in scenery.project_ids
            ]
            sink = StdoutSink(sys.stdout, prefix=True)
            pipeline = Pipeline([sink], followers)
            scheduler = Scheduler([pipeline], shutdown, interval=0.5, max_interval=1.0)
            if args.seconds:
                threading.Timer(args.seconds, shutdown.event.set).start()
            scheduler.run()
        finally:
            scenery.stop()
    return 0


def emulator(args: argparse.Namespace, shutdown: Shutdown, env: Env) -> int:
    from tailer.emulator import serve

    serve(
        args.host,
        args.port,
        user_id=args.user_id,
        api_token=args.api_token or secrets.token_hex(16),
        publish_interval=args.publish_interval,
        publish_jitter=args.publish_jitter,
        publish_stamp=args.publish_stamp,
        seed=args.seed,
        max_lines=args.max_lines,
        lively=not args.quiet,
        preload=args.preload,
        projects=args.projects,
        latency=args.latency,
        fault_rate=args.fault_rate,
        fault_kinds=args.fault,
        auth_failure=args.auth_failure,
        skew=args.skew,
        list_ignores_project=args.list_ignores_project,
        stale_read_rate=args.stale_read_rate,
        lag_rate=args.lag_rate,
        lag_lines=args.lag_lines,
        stop=shutdown.event,
        out=sys.stdout,
    )
    return 0


def _project_names(api: QcApi, known: Mapping[int, str | None]) -> dict[int, str | None]:
    """Project names, asking /projects/read only for those the listing left out."""
    return {pid: name or api.project_name(pid) for pid, name in known.items()}

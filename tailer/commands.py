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
from typing import TextIO

from tailer import colour, terminal
from tailer.api import QcApi
from tailer.assembly import FOLLOWING, ONE_SHOT, build_api
from tailer.colour import Painter
from tailer.config import Config, StartAt, load_config
from tailer.discovery import Discovery
from tailer.errors import ConfigError, NotFoundError
from tailer.follower import ProjectFollower, Start
from tailer.pipeline import Pipeline
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
    options = terminal.TailOptions(
        targets=tuple(args.targets),
        all=args.all,
        deploy=args.deploy,
        follow=args.follow,
        start=Start(StartAt.DEPLOYMENT) if args.from_start else args.lines,
        format=args.format,
        prefix=args.prefix,
        interval=args.interval,
        colour=args.format == "text" and colour.wanted(args.color, sys.stdout, env),
        grep=args.grep,
        since=args.since,
        progress=_isatty(sys.stderr) and not _isatty(sys.stdout),
    )
    return terminal.tail(config, api, shutdown, options)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def run(args: argparse.Namespace, shutdown: Shutdown, env: Env) -> int:
    """The daemon: every configured and discovered deployment, to every configured output."""
    from tailer import service  # the daemon's wiring: the other commands start without it
    from tailer.daemon import Notifier

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
        build_api(
            config, shutdown, FOLLOWING, service.kept_metrics(config), service.shared_reads(config)
        ),
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
    from tailer.preflight import check_outputs  # imported on use: requests is slow to import

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
        _check_discovery(api, config)
    return problem


def _check_discovery(api: QcApi, config: Config) -> None:
    """The running deployments discovery would follow: this shard's, if sharded."""
    running = api.list_live(status="Running")
    discovery = Discovery(api, config.discovery)
    found = [d for d in running if discovery.wants(d.project_id)]
    k, n = config.discovery.shard
    if n > 1:
        limited = [d for d in running if discovery.limits(d.project_id)]
        print(
            f"discovery: shard {k}/{n} owns {len(found)} of {len(limited)} running "
            "deployment(s); these would be followed"
        )
    else:
        print(f"discovery: {len(found)} running deployment(s) would be followed")
    for d in found:
        print(f"  project {d.project_id} [{d.project_name or '-'}]: {d.deploy_id}")


def demo(args: argparse.Namespace, shutdown: Shutdown, env: Env) -> int:
    from tailer.emulator import Emulator, Scenery

    token = secrets.token_hex(16)
    with Emulator(user_id=1234, api_token=token, publish_interval=1.0).start() as emu:
        scenery = Scenery(emu, seed=secrets.randbelow(2**31))
        scenery.start()
        names = [algorithm.name for algorithm in scenery.algorithms]
        sys.stderr.write(banner(emu.base_url, 1234, token, names, scenery.project_ids[0]))
        sys.stderr.flush()
        timer = threading.Timer(args.seconds or 0, shutdown.event.set)
        timer.daemon = True  # Ctrl-C before it fires must not wait for it
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
                ProjectFollower(api, project_id, start=Start(StartAt.LAST, 3))
                for project_id in scenery.project_ids
            ]
            paint = Painter() if colour.wanted("auto", sys.stdout, env) else None
            sink = StdoutSink(sys.stdout, prefix=True, paint=paint)
            pipeline = Pipeline([sink], followers)
            scheduler = Scheduler([pipeline], shutdown, interval=0.5, max_interval=1.0)
            if args.seconds:
                timer.start()
            scheduler.run()
        finally:
            timer.cancel()
            scenery.stop()
    return 0


def banner(url: str, user_id: int, token: str, names: list[str], project_id: int) -> str:
    """What ``demo`` tells a newcomer first (on stderr: stdout carries only log lines)."""
    return (
        "qc-tail demo: these are made-up algorithms in qc-tail's built-in emulator of the\n"
        f"QuantConnect API, at {url} (no account, no network). Ctrl-C stops it.\n"
        "To try qc-tail against it from another terminal:\n"
        f"  export QC_BASE_URL={url}\n"
        f"  export QC_USER_ID={user_id}\n"
        f"  export QC_API_TOKEN={token}\n"
        "  qc-tail list\n"
        f"  qc-tail tail {names[0]} {names[-1]} -f\n"
        f"  qc-tail tail {project_id} --since 10m --grep order\n\n"
    )


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
        export=(args.export, args.export_quota),
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
        unknowns={
            "past_end": args.past_end,
            "strict_window": args.strict_window,
            "absolute_numbers": args.absolute_numbers,
            "bare_answers": args.bare_answers,
        },
        active=args.active,
        active_every=args.active_every,
        active_lines=args.active_lines,
        stop=shutdown.event,
        out=sys.stdout,
    )
    return 0


def _project_names(api: QcApi, known: Mapping[int, str | None]) -> dict[int, str | None]:
    """Project names, asking /projects/read only for those the listing left out."""
    return {pid: name or api.project_name(pid) for pid, name in known.items()}

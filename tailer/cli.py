"""argv -> config -> objects -> run; maps errors to exit codes. No logic of its own."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence

from tailer import __version__, commands, logs
from tailer.config import LIST_STATUSES, StartAt
from tailer.errors import QcTailError
from tailer.follower import Start
from tailer.shutdown import Interrupted, Shutdown
from tailer.since import Since, parse_since

EX_SOFTWARE = 70
EX_INTERRUPTED = 130

SWITCH_INTERVAL = 0.0005
"""Seconds a thread may run before handing the interpreter to another that waits for it."""

EXIT_CODES = {
    0: "ok; also after SIGTERM (a service stop) and `tail ... | head`",
    1: "the API said no (no such project); `run --once`: an output failed",
    2: "usage: a wrong option or argument; a project name matching none, or several",
    69: "API (or Loki, for check) unreachable; the emulator's or metrics.listen's port in use",
    70: "internal error: a bug in qc-tail, please report it",
    73: "a state or output directory or file cannot be created or written",
    74: "I/O error: stdout failing, or closed as `run`'s only output; disk full",
    75: "another instance holds the state directory",
    77: "authentication failed",
    78: "configuration invalid",
    129: "hung up (SIGHUP; `run` reopens its output files instead)",
    130: "interrupted (SIGINT, Ctrl-C)",
}
"""Every code the program can return (README.md lists the same)."""

_COMMAND_CODES = {
    "tail": (0, 1, 2, 69, 70, 74, 77, 78, 129, 130),
    "run": (0, 1, 2, 69, 70, 73, 74, 75, 77, 78, 130),
    "list": (0, 1, 2, 69, 70, 77, 78, 129, 130),
    "check": (0, 1, 2, 69, 70, 73, 74, 77, 78, 129, 130),
    "demo": (0, 2, 69, 70, 129, 130),
    "emulator": (0, 2, 69, 70, 129, 130),
    "completion": (0, 2, 70),
}


EXAMPLES = {
    "tail": """examples (ids and names of `qc-tail emulator`'s projects):
  qc-tail tail 24112040                     the last 10 lines of the current deployment
  qc-tail tail mean-reversion pairs-fx -f   two projects by name, interleaved, [name] each
  qc-tail tail --all -f                     every Running deployment, and new ones as they come
  qc-tail tail 24112040 --since 2h --grep order    orders of the last two hours
  qc-tail tail 24112040 --deploy L-... -f   one deployment; exits 0 once it stopped and drained
  qc-tail tail 24112040 -f --format json | jq .text""",
    "run": """examples:
  qc-tail run --config /etc/qc-tail/config.toml          follow to files, stdout and Loki
  qc-tail run --config config.toml --once                catch up on everything, then exit
  qc-tail run --config config.toml --detach --pidfile /run/qc-tail.pid""",
    "list": """examples:
  qc-tail list                           every live deployment of the account
  qc-tail list --status Running --format json""",
    "check": """examples:
  qc-tail check --config /etc/qc-tail/config.toml""",
    "demo": """examples:
  qc-tail demo                           then try the commands it prints, in another terminal
  qc-tail demo --seconds 30""",
    "emulator": """examples:
  qc-tail emulator --port 8642 --api-token demo-token    a stable address and token
  qc-tail emulator --fault-rate 0.2                      a fifth of the answers faulty""",
    "completion": """examples:
  qc-tail completion bash > ~/.local/share/bash-completion/completions/qc-tail
  qc-tail completion zsh > ~/.zfunc/_qc-tail     (with fpath+=~/.zfunc in ~/.zshrc)""",
}
"""Each command's examples, shown at the end of its ``--help`` before its exit codes."""


def exit_codes(codes: Sequence[int] = tuple(EXIT_CODES)) -> str:
    """A ``--help`` epilog listing ``codes``."""
    return "exit codes:\n" + "\n".join(f"  {code:<4} {EXIT_CODES[code]}" for code in codes)


log = logs.get_logger(__name__)


def _since(text: str) -> Since:
    try:
        return parse_since(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a span before now (2h, 90m, 1d) or a time (2026-11-30T14:00), got {text}"
        ) from None


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text.lstrip("+"))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def _lines(text: str) -> Start:
    """``-n``: ``N`` is the last N lines; ``+K`` starts with the deployment's K-th line (as in
    GNU tail, ``+0`` is ``+1``)."""
    if text.startswith("+"):
        return Start(StartAt.LINE, max(0, _count(text[1:]) - 1))
    return Start(StartAt.LAST, _count(text))


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(text)
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def _milliseconds(text: str) -> float:
    """A duration given in milliseconds (>= 0), as seconds."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of milliseconds >= 0, got {text}")
    return value / 1000


def _globals(parser: argparse.ArgumentParser, default: object) -> None:
    """Global options, accepted before or after the command name."""
    parser.add_argument("--config", metavar="PATH", default=default, help="TOML config file")
    parser.add_argument("--base-url", metavar="URL", default=default, help="API base URL")
    parser.add_argument("--log-level", choices=logs.LEVELS, default=default)
    parser.add_argument("--log-format", choices=("console", "json"), default=default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qc-tail",
        description="Follow QuantConnect live-algorithm logs like tail -f.",
        epilog=exit_codes(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qc-tail {__version__}")
    _globals(parser, None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, run: Callable[..., int]) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=EXAMPLES[name] + "\n\n" + exit_codes(_COMMAND_CODES[name]),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _globals(p, argparse.SUPPRESS)
        p.set_defaults(run=run, parser=p, reopen_on_hangup=False)  # SIGHUP stops, as for tail
        return p

    tail = command(
        "tail",
        "print the last lines of projects' deployments, and follow them with -f",
        commands.tail,
    )
    tail.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="a project id, or a project name (exact, any case), as `qc-tail list` shows them",
    )
    tail.add_argument(
        "--all", action="store_true", help="every Running deployment (with -f: new ones too)"
    )
    tail.add_argument(
        "--deploy",
        metavar="DEPLOY_ID",
        help="one deployment of the one TARGET (default: the current one, across redeploys); "
        "with -f, exit once it has stopped and its late lines are in",
    )
    tail.add_argument("-f", "--follow", action="store_true", help="keep following new lines")
    where = tail.add_mutually_exclusive_group()
    where.add_argument(
        "-n",
        "--lines",
        type=_lines,
        default=Start(StartAt.LAST, 10),
        metavar="N",
        help="the last N lines (default 10); +K: from the deployment's K-th line on",
    )
    where.add_argument("--from-start", action="store_true", help="from the deployment's start")
    where.add_argument(
        "--since",
        type=_since,
        metavar="WHEN",
        help="from the first line stamped at WHEN or later: 2h, 90m, 1d (before now) or "
        "2026-11-30T14:00 (the algorithm's time zone, as its lines are stamped)",
    )
    tail.add_argument(
        "--grep",
        metavar="WORD",
        help="only lines containing WORD, in any case (as QuantConnect's log filter)",
    )
    tail.add_argument("--format", choices=("text", "json"), default="text")
    tail.add_argument(
        "--prefix",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="[name] before each line (default: with several targets, or once a second "
        "deployment's lines appear)",
    )
    tail.add_argument(
        "--color",
        "--colour",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour each target's [name] (default auto: on a terminal, unless NO_COLOR is set)",
    )
    tail.add_argument(
        "--interval",
        type=_positive_float,
        metavar="SECONDS",
        help="poll every SECONDS, fixed (default: as the deployment publishes: its snapshot "
        "rhythm is learned and each poll lands just after a snapshot is due; poll.interval "
        "until there is one)",
    )

    daemon = command("run", "follow the configured deployments to the outputs", commands.run)
    daemon.set_defaults(reopen_on_hangup=True)  # logrotate's SIGHUP: reopen output files
    daemon.add_argument("--once", action="store_true", help="catch up on everything, then exit")
    daemon.add_argument("--detach", action="store_true", help="run in the background")
    daemon.add_argument("--pidfile", metavar="PATH", help="with --detach: the pid (locked)")
    daemon.add_argument("--log-file", metavar="PATH", help="with --detach: default state.dir")

    listing = command("list", "list live deployments", commands.list_deployments)
    listing.add_argument("--status", choices=LIST_STATUSES)
    listing.add_argument("--format", choices=("table", "json"), default="table")

    command(
        "check", "validate the config and credentials; show what would be followed", commands.check
    )

    demo = command(
        "demo", "follow a built-in emulator's lively algorithms (no account)", commands.demo
    )
    demo.add_argument("--seconds", type=_positive_float, help="stop after this long")

    emulator = command("emulator", "serve the QuantConnect API emulator", commands.emulator)
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=_port, default=0, help="default 0: a free port")
    emulator.add_argument("--user-id", type=int, default=1234)
    emulator.add_argument("--api-token", default=None, help="default: a random token")
    emulator.add_argument("--publish-interval", type=float, default=0.0, metavar="SECONDS")
    emulator.add_argument(
        "--publish-jitter",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="each snapshot interval drawn from --publish-interval x (1 +/- F) (default 0; "
        "e.g. 0.8 with 100 s: irregular, 20 to 180 s)",
    )
    emulator.add_argument(
        "--publish-stamp",
        action="store_true",
        help="benchmarks: each snapshot adds to every project a line stamped with the "
        "moment it is published (unix seconds)",
    )
    emulator.add_argument("--seed", type=int, default=0, help="for the jitter (default 0)")
    emulator.add_argument("--max-lines", type=int, default=100_000)
    emulator.add_argument(
        "--export",
        choices=("429", "refusal", "off"),
        default="429",
        help="/live/export/logs over its quota answers 429 (default) or 200 success:false; "
        "off: the endpoint is unknown (404)",
    )
    emulator.add_argument(
        "--export-quota",
        type=_count,
        default=45,
        metavar="N",
        help="exports answered per 30 minutes (default 45)",
    )
    emulator.add_argument("--quiet", action="store_true", help="no lively demo algorithms")
    emulator.add_argument(
        "--preload",
        type=_count,
        metavar="N",
        help="benchmarks: deploy project 1 ('bench') with N published lines",
    )
    emulator.add_argument(
        "--projects",
        type=_positive_int,
        metavar="K",
        help="benchmarks: projects 1..K, each deployed with the --preload lines (default 0)",
    )
    emulator.add_argument(
        "--active",
        type=_count,
        default=0,
        metavar="K",
        help="benchmarks: after SIGUSR2, projects 1..K get --active-lines new lines every "
        "--active-every seconds (default 0)",
    )
    emulator.add_argument("--active-every", type=_positive_float, default=30.0, metavar="S")
    emulator.add_argument("--active-lines", type=_positive_int, default=10, metavar="N")
    emulator.add_argument(
        "--latency",
        type=_milliseconds,
        default=0.0,
        metavar="MS",
        help="milliseconds slept before every answer (default 0)",
    )
    emulator.add_argument(
        "--fault-rate",
        type=_fraction,
        default=0.0,
        metavar="R",
        help="the share of requests (0 to 1) that get a random fault (default 0)",
    )
    emulator.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND",
        help="with --fault-rate, a kind to draw from (repeatable; default: every transient "
        "one): 500 empty500 502 503 429 reset truncated slow auth html",
    )
    emulator.add_argument(
        "--lag-rate",
        type=_fraction,
        default=0.0,
        metavar="R",
        help="the share of log reads (0 to 1) answered stale, as a lagging replica (default 0)",
    )
    emulator.add_argument(
        "--lag-lines",
        type=_positive_int,
        default=20,
        metavar="N",
        help="with --lag-rate, how many rows behind a stale answer is, at most (default 20)",
    )
    emulator.add_argument(
        "--auth-failure",
        default="401",
        metavar="SHAPE",
        help="how refused credentials look: 401 (default), hash, userid, empty500",
    )
    emulator.add_argument(
        "--skew", type=float, default=0.0, metavar="SECONDS", help="the server clock's offset"
    )
    emulator.add_argument(
        "--list-ignores-project",
        action="store_true",
        help="/live/list filters by status only and lists every project's deployments",
    )
    emulator.add_argument(
        "--stale-read-rate",
        type=_fraction,
        default=0.0,
        metavar="R",
        help="the share of /live/read answers (0 to 1) that name the previous deployment, "
        "as a lagging replica would (default 0)",
    )
    _unknowns(emulator)
    completion = command(
        "completion", "print a shell completion script (bash, zsh, fish, tcsh)", _completion
    )
    completion.add_argument("shell", choices=("bash", "zsh", "fish", "tcsh"))
    return parser


def _unknowns(emulator: argparse.ArgumentParser) -> None:
    """The emulator's switches for what the API's documentation leaves open."""
    emulator.add_argument(
        "--past-end",
        choices=("empty", "error"),
        default="empty",
        help="a log read at or past the log's length answers no rows (default) or an "
        "out-of-range error",
    )
    emulator.add_argument(
        "--strict-window",
        action="store_true",
        help="log windows must be smaller than 250 rows (default: at most 250)",
    )
    emulator.add_argument(
        "--absolute-numbers",
        action="store_true",
        help="trimming keeps line numbers (short windows below the first line left) instead "
        "of renumbering from 0",
    )
    emulator.add_argument(
        "--bare-answers",
        action="store_true",
        help="answers without 'errors', with 'logs': null for no rows, and unknown fields",
    )


def _completion(args: argparse.Namespace, shutdown: Shutdown, env: Mapping[str, str]) -> int:
    """Generated from the parser itself, so it never lags behind an option."""
    import shtab  # imported on use: no other command needs it

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0


def _check_targets(args: argparse.Namespace) -> None:
    if not args.targets and not args.all:
        args.parser.error("name a TARGET (a project id or name), or --all")
    if args.all and args.targets:
        args.parser.error("--all follows every Running deployment: name no TARGET with it")
    if args.deploy and (args.all or len(args.targets) != 1):
        args.parser.error("--deploy needs exactly one TARGET (the project it belongs to)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line; a usage error exits 2 with the command's usage."""
    args = build_parser().parse_args(argv)
    if args.run is commands.tail:
        _check_targets(args)
    if getattr(args, "detach", False) and args.pidfile is None:
        args.parser.error("--detach needs --pidfile PATH (where the daemon's pid is kept)")
    if args.run is commands.emulator:  # checked here: the emulator is imported only if used
        from tailer.emulator.faults import KINDS
        from tailer.emulator.server import AUTH_SHAPES

        for kind in args.fault:
            if kind not in KINDS:
                args.parser.error(f"--fault: unknown kind {kind!r}; known: {' '.join(KINDS)}")
        if args.auth_failure not in AUTH_SHAPES:
            shapes = " ".join(AUTH_SHAPES)
            args.parser.error(
                f"--auth-failure: unknown shape {args.auth_failure!r}; known: {shapes}"
            )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    shutdown = Shutdown()
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    logs.configure(args.log_level or "info", args.log_format)
    if args.reopen_on_hangup:  # its SIGHUP handler says "reopened" (see logs.load)
        logs.load()
    if args.run is not commands.emulator:  # (a stand-in for the API: left as Python sets it)
        _settle_interpreter()
    try:
        shutdown.install(reopen_on_hangup=args.reopen_on_hangup)
        code: int = args.run(args, shutdown, dict(os.environ))
        sys.stdout.flush()
        return code
    except Interrupted as exc:
        return _stopped_by(exc.signum)
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except QcTailError as exc:
        print(f"qc-tail: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception:
        log.exception("internal_error", hint="this is a bug in qc-tail; please report it")
        return EX_SOFTWARE
    finally:
        shutdown.uninstall()


def _settle_interpreter() -> None:
    """Tune the interpreter for a process of threads that mostly wait on the network.

    What was imported lives as long as the process: frozen, the garbage collector never
    walks it again, during the run or as the process exits. Answers come back to threads
    that need the interpreter for a moment each before they ask for the next window; by
    default a thread busy with lines keeps it from them for up to 5 ms.
    """
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)


def _stopped_by(signum: int) -> int:
    """SIGTERM is a normal end (a service stop): 0; any other signal: 128 + its number
    (130 after Ctrl-C, 129 after a hangup), as a shell reports it."""
    return 0 if signum == signal.SIGTERM else 128 + signum


def _silence_stdout() -> None:
    """The reader went away (``| head``): end quietly, without a flush error at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())

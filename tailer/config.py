"""TOML -> frozen dataclasses; every check and default lives here.

``load_config(path, env)`` reads the TOML file, applies the environment (``QC_BASE_URL``,
``QC_USER_ID``, the API token sources, ``QC_TAIL_METRICS_LISTEN``) and returns a frozen
``Config``, or raises ``ConfigError`` naming the file and the dotted key (``poll.interval``,
``follow[0].start``: array entries count from 0). Relative paths count from the config file's
directory. Secrets are read here, only from files that their owner alone may read, and never
appear in a repr. Empty environment variables count as unset.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeGuard, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from tailer.errors import ConfigError
from tailer.redaction import redact_url


class StartAt(enum.StrEnum):
    """Where a deployment with no saved cursor starts (``follower.Start`` adds how far):
    the config accepts the first three (``STARTS``); ``tail``'s options give the others."""

    END = "end"
    DEPLOYMENT = "deployment"
    PROJECT = "project"
    LAST = "last"
    LINE = "line"
    SINCE = "since"


STARTS = (StartAt.END, StartAt.DEPLOYMENT, StartAt.PROJECT)
FORMATS = ("text", "json")
LINE_LABELS = ("project_id", "deploy_id", "name")  # Loki labels qc-tail sets on every stream
CREDENTIAL_NAME = "qc-api-token"  # the systemd credential in $CREDENTIALS_DIRECTORY


class Labels(Mapping[str, str]):
    """An immutable, hashable ``str -> str`` mapping (Loki's configured labels)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"Labels({self._items!r})"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """[api]: where QuantConnect is and how hard to press it (seconds, requests)."""

    base_url: str = "https://www.quantconnect.com/api/v2"
    user_id: int | None = None
    api_token: str | None = field(default=None, repr=False)
    timeout: float = 30.0
    max_requests_per_minute: int = 0
    max_in_flight: int = 4
    ca_bundle: Path | None = None
    export: str = "auto"  # read large backlogs through /live/export/logs: auto | never
    export_per_30min: int = 30  # of the account's 45 exports per 30 minutes, at most this many


DRAIN = 600.0
"""Seconds a deployment that stopped is still read, for the lines it publishes late."""

LIST_STATUSES = ("Running", "Stopped", "RuntimeError", "Liquidated")
"""The statuses /live/list filters by."""


@dataclass(frozen=True, slots=True)
class PollConfig:
    """[poll]: seconds between reads of a deployment, idle back-off, and after it stops."""

    interval: float = 30.0
    max_interval: float = 300.0
    drain: float = DRAIN


@dataclass(frozen=True, slots=True)
class StateConfig:
    """[state]: the directory of durable cursors."""

    dir: Path = Path("/var/lib/qc-tail")


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    """[discovery]: following every Running deployment of the account."""

    enabled: bool = True
    interval: float = 300.0
    projects: tuple[int, ...] = ()
    start: StartAt = StartAt.DEPLOYMENT
    shard: tuple[int, int] = (1, 1)  # (K, N): this instance follows shard K of N


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """[metrics]: Prometheus metrics and /healthz; ``listen`` None: not served."""

    listen: tuple[str, int] | None = None
    stall: float = 120.0  # seconds without progress before /healthz answers 503


@dataclass(frozen=True, slots=True)
class FollowConfig:
    """One [[follow]] entry: a project (or one deployment of it) to follow."""

    project_id: int
    deploy_id: str | None = None
    name: str | None = None
    start: StartAt = StartAt.DEPLOYMENT


@dataclass(frozen=True, slots=True)
class LokiConfig:
    """[output.loki]: pushes to Grafana Loki; secrets already read from their files."""

    url: str
    labels: Mapping[str, str] = Labels()
    tenant_id: str = ""
    batch_size: int = 1_048_576
    timezone: str = "America/New_York"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    # Where to ask what Loki holds before a re-push. None: the push URL's ``/push`` turned
    # into ``/query_range``; "" when it has none to turn (queries are then not made).
    query_url: str | None = None
    # Credentials for queries; all None: the push credentials.
    query_username: str | None = None
    query_password: str | None = field(default=None, repr=False)
    query_bearer_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", Labels(self.labels))
        if self.query_url is None:
            head, slash, tail = self.url.partition("?")[0].rstrip("/").rpartition("/")
            derived = f"{head}/query_range" if slash and tail == "push" else ""
            object.__setattr__(self, "query_url", derived)
        if (self.query_username, self.query_password, self.query_bearer_token) == (None,) * 3:
            object.__setattr__(self, "query_username", self.username)
            object.__setattr__(self, "query_password", self.password)
            object.__setattr__(self, "query_bearer_token", self.bearer_token)


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """[output]: where lines go."""

    stdout: bool = False
    format: str = "text"
    directory: Path | None = None
    loki: LokiConfig | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration; ``source`` is the file it came from (None: defaults)."""

    api: ApiConfig = field(default_factory=ApiConfig)
    poll: PollConfig = field(default_factory=PollConfig)
    state: StateConfig = field(default_factory=StateConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    follows: tuple[FollowConfig, ...] = ()
    output: OutputConfig = field(default_factory=OutputConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: Path | None = None


# -- value checks: each returns what is wrong with a string, or None -------------------------

Check = Callable[[str], str | None]
D = TypeVar("D")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MAX = 2**63 - 1  # TOML's largest integer


def _one_of(*choices: str) -> Check:
    wanted = "must be one of " + ", ".join(json.dumps(c) for c in choices)
    return lambda value: None if value in choices else wanted


def _matches(pattern: str) -> Check:
    regex = re.compile(pattern)
    return lambda value: None if regex.fullmatch(value) else f"must match {pattern}"


def _printable(lo: int, hi: int) -> Check:
    wanted = f"must be {lo} to {hi} printable characters"
    return lambda value: None if lo <= len(value) <= hi and value.isprintable() else wanted


def _http_url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        ok = ok and (parts.port is None or parts.port > 0)
    except ValueError:  # a port out of range, a broken IPv6 literal
        ok = False
    if ok and value.isprintable() and " " not in value:
        return None
    return "must be an http:// or https:// URL with a host"


def _zone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (KeyError, ValueError, OSError, UnicodeError):
        return "must be an IANA time zone such as America/New_York or UTC"
    return None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[float]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _show(value: object) -> str:
    """A value as a message shows it: TOML-ish and short."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):  # a URL's user and password are never shown
        text = json.dumps(redact_url(value) if "@" in value else value, ensure_ascii=False)
    elif isinstance(value, dict | list):
        text = "a table" if isinstance(value, dict) else "an array"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- reading tables ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    name: str | None  # the config file as the user named it, for messages
    base: Path  # where relative paths start


class _Table:
    """One TOML table being read; every getter notes its key, and ``done()`` refuses the rest."""

    def __init__(self, data: dict[str, object], key: str, src: _Source) -> None:
        self.data, self.key, self.src = data, key, src
        self.known: list[str] = []

    def dotted(self, name: str, index: int | None = None) -> str:
        part = name if _BARE_KEY.fullmatch(name) else json.dumps(name)
        part += "" if index is None else f"[{index}]"
        return f"{self.key}.{part}" if self.key else part

    def fail(self, name: str, message: str, index: int | None = None) -> NoReturn:
        raise ConfigError(message, path=self.src.name, key=self.dotted(name, index))

    def raw(self, name: str, *, required: bool = False) -> object:
        self.known.append(name)
        if required and name not in self.data:
            self.fail(name, "is required")
        return self.data.get(name)

    def done(self) -> None:
        for name in self.data:
            if name not in self.known:
                self.fail(name, f"unknown key (known here: {', '.join(sorted(self.known))})")

    def number(
        self, name: str, default: float, *, minimum: float = 0, strict: bool = True
    ) -> float:
        value = self.raw(name)
        if value is None:
            return default
        if not _is_number(value) or (value <= minimum if strict else value < minimum):
            wanted = f"{'>' if strict else '>='} {minimum:g}"
            self.fail(name, f"must be a number {wanted}, got {_show(value)}")
        return float(value)

    def integer(
        self, name: str, default: D, *, minimum: int, maximum: int = _MAX, required: bool = False
    ) -> int | D:
        value = self.raw(name, required=required)
        return default if value is None else self._int(value, name, None, minimum, maximum)

    def integers(self, name: str, *, minimum: int) -> tuple[int, ...]:
        values = self.raw(name)
        if values is not None and not isinstance(values, list):
            self.fail(name, f"must be an array of integers, got {_show(values)}")
        return tuple(self._int(v, name, i, minimum, _MAX) for i, v in enumerate(values or ()))

    def _int(self, value: object, name: str, index: int | None, lo: int, hi: int) -> int:
        if not _is_int(value) or not lo <= value <= hi:
            wanted = f">= {lo}" if hi == _MAX else f"from {lo} to {hi}"
            self.fail(name, f"must be an integer {wanted}, got {_show(value)}", index)
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is not None and not isinstance(value, bool):
            self.fail(name, f"must be true or false, got {_show(value)}")
        return default if value is None else value

    def string(
        self, name: str, default: D, check: Check, *, secret: bool = False, required: bool = False
    ) -> str | D:
        value = self.raw(name, required=required)
        if value is None:
            return default
        if not isinstance(value, str):
            self.fail(name, f"must be a string, got {_show(value)}")
        if problem := check(value):
            self.fail(name, problem if secret else f"{problem}, got {_show(value)}")
        return value

    def path(self, name: str, default: D, *, must_exist: bool = False) -> Path | D:
        value = self.raw(name)
        if value is None:
            return default
        if not isinstance(value, str) or not value or "\0" in value:
            self.fail(name, f"must be a non-empty path, got {_show(value)}")
        path = self.src.base / value
        if must_exist and not path.is_file():
            self.fail(name, f"no such file: {path}")
        return path

    def table(self, name: str) -> _Table | None:
        value = self.raw(name)
        if value is not None and not isinstance(value, dict):
            self.fail(name, f"must be a table, got {_show(value)}")
        return None if value is None else _Table(value, self.dotted(name), self.src)

    def tables(self, name: str) -> list[_Table]:
        values = self.raw(name)
        if values is not None and not isinstance(values, list):
            self.fail(name, f"must be an array of tables ([[{name}]]), got {_show(values)}")
        for i, value in enumerate(values or ()):
            if not isinstance(value, dict):
                self.fail(name, f"must be a table, got {_show(value)}", i)
        return [_Table(v, self.dotted(name, i), self.src) for i, v in enumerate(values or ())]


# -- files and secrets -----------------------------------------------------------------------


def _read(path: Path, via: str = "") -> tuple[bytes, os.stat_result]:
    try:
        with path.open("rb") as file:
            return file.read(), os.fstat(file.fileno())
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"cannot read{via}: {reason}", path=str(path)) from None


def _check_private(path: Path, st: os.stat_result) -> None:
    """Like ssh: a file holding a secret is for its owner's eyes only."""
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        message = f"permissions {mode:04o} are too open; it holds a secret: chmod 600 it"
        raise ConfigError(message, path=str(path))
    if st.st_uid not in (os.geteuid(), 0):
        owners = f"uid {os.geteuid()} or root" if os.geteuid() else "root"
        message = f"is owned by uid {st.st_uid}; it holds a secret, so only {owners} may own it"
        raise ConfigError(message, path=str(path))


def _read_secret(path: Path, via: str, *, private: bool = True) -> str:
    data, st = _read(path, f" (named by {via})")
    if private:
        _check_private(path, st)
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text; it should hold the secret", path=str(path)) from None
    if not text:
        raise ConfigError(f"is empty; it should hold the secret (named by {via})", path=str(path))
    if not text.isprintable():
        raise ConfigError("must hold a single line of printable text", path=str(path))
    return text


def _api_token(
    env: Mapping[str, str], token_file: Path | None, inline: str | None
) -> tuple[str | None, str]:
    """The token and where it came from: the first of the systemd credential,
    api.api_token_file, $QC_API_TOKEN, api.api_token (a service's own files before a stray
    environment variable)."""
    if credentials := env.get("CREDENTIALS_DIRECTORY"):
        credential = Path(credentials) / CREDENTIAL_NAME
        if credential.is_file():
            via = "the systemd credential qc-api-token"
            return _read_secret(credential, "$CREDENTIALS_DIRECTORY", private=False), via
    if token_file is not None:
        return _read_secret(token_file, "api.api_token_file"), "api.api_token_file"
    if token := env.get("QC_API_TOKEN", "").strip():
        if not token.isprintable():
            raise ConfigError("must be a single line of printable text", key="QC_API_TOKEN")
        return token, "QC_API_TOKEN"
    return inline, "api.api_token"


# -- the sections ----------------------------------------------------------------------------


def _api(t: _Table, env: Mapping[str, str]) -> ApiConfig:
    d = ApiConfig()
    base_url = t.string("base_url", d.base_url, _http_url)
    user_id = t.integer("user_id", d.user_id, minimum=1)
    inline = t.string("api_token", None, _printable(1, 4096), secret=True)
    token_file = t.path("api_token_file", None)
    timeout = t.number("timeout", d.timeout)
    per_minute = t.integer("max_requests_per_minute", d.max_requests_per_minute, minimum=0)
    in_flight = t.integer("max_in_flight", d.max_in_flight, minimum=1, maximum=64)
    ca_bundle = t.path("ca_bundle", d.ca_bundle, must_exist=True)
    export = t.string("export", d.export, _one_of("auto", "never"))
    export_per_30min = t.integer("export_per_30min", d.export_per_30min, minimum=0, maximum=45)
    t.done()
    if env_url := env.get("QC_BASE_URL"):
        if problem := _http_url(env_url):
            raise ConfigError(f"{problem}, got {_show(env_url)}", key="QC_BASE_URL")
        base_url = env_url
    token, token_from = _api_token(env, token_file, inline)
    if env_user := env.get("QC_USER_ID"):
        if not re.fullmatch(r"[0-9]{1,18}", env_user) or int(env_user) < 1:
            raise ConfigError(f"must be an integer >= 1, got {_show(env_user)}", key="QC_USER_ID")
        if (
            user_id is not None
            and int(env_user) != user_id
            and token
            and token_from != "QC_API_TOKEN"
        ):
            raise ConfigError(  # a user from one place, a token from another: never a match
                f"is {env_user}, but {t.src.name} says api.user_id = {user_id} and the token "
                f"comes from {token_from}, which belongs with it; unset QC_USER_ID (or make "
                "the two agree)",
                key="QC_USER_ID",
            )
        user_id = int(env_user)
    return ApiConfig(
        base_url=base_url,
        user_id=user_id,
        api_token=token,
        timeout=timeout,
        max_requests_per_minute=per_minute,
        max_in_flight=in_flight,
        ca_bundle=ca_bundle,
        export=export,
        export_per_30min=export_per_30min,
    )


def _poll(t: _Table) -> PollConfig:
    d = PollConfig()
    interval = t.number("interval", d.interval)
    max_interval = t.number("max_interval", max(d.max_interval, interval))
    if max_interval < interval:
        t.fail("max_interval", f"must be >= poll.interval ({interval:g}), got {max_interval:g}")
    drain = t.number("drain", d.drain, strict=False)
    t.done()
    return PollConfig(interval, max_interval, drain)


def _state(t: _Table) -> StateConfig:
    state = StateConfig(t.path("dir", StateConfig().dir))
    t.done()
    return state


def _discovery(t: _Table) -> DiscoveryConfig:
    d = DiscoveryConfig()
    enabled = t.boolean("enabled", d.enabled)
    interval = t.number("interval", d.interval)
    projects = tuple(dict.fromkeys(t.integers("projects", minimum=1)))
    start = StartAt(t.string("start", d.start, _one_of(*STARTS)))
    shard = t.string("shard", None, _shard)
    t.done()
    return DiscoveryConfig(enabled, interval, projects, start, _parse_shard(shard) or d.shard)


def _shard(value: str) -> str | None:
    if _parse_shard(value) is None:
        return 'must be "K/N" with 1 <= K <= N (this instance\'s shard of N)'
    return None


def _parse_shard(value: str | None) -> tuple[int, int] | None:
    match = re.fullmatch(r"([0-9]{1,6})/([0-9]{1,6})", value or "")
    if match is None:
        return None
    k, n = int(match[1]), int(match[2])
    return (k, n) if 1 <= k <= n else None


def _listen(value: str) -> str | None:
    if _parse_listen(value) is None:
        return 'must be "HOST:PORT" (an IPv6 host in brackets), port 0 to 65535'
    return None


def _parse_listen(value: str) -> tuple[str, int] | None:
    host, colon, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or int(port) > 65535 or " " in host:
        return None
    return host, int(port)


def _metrics(t: _Table, env: Mapping[str, str]) -> MetricsConfig:
    d = MetricsConfig()
    listen = t.string("listen", None, _listen)
    stall = t.number("stall", d.stall)
    t.done()
    if env_listen := env.get("QC_TAIL_METRICS_LISTEN"):  # how the systemd unit turns it on
        if problem := _listen(env_listen):
            raise ConfigError(f"{problem}, got {_show(env_listen)}", key="QC_TAIL_METRICS_LISTEN")
        listen = env_listen
    return MetricsConfig(None if listen is None else _parse_listen(listen), stall)


def _follow(t: _Table) -> FollowConfig:
    project_id = t.integer("project_id", 0, minimum=1, required=True)
    deploy_id = t.string("deploy_id", None, _matches(r"L-[A-Za-z0-9]{1,64}"))
    name = t.string("name", None, _printable(1, 64))
    start = StartAt(t.string("start", FollowConfig(0).start, _one_of(*STARTS)))
    t.done()
    return FollowConfig(project_id, deploy_id, name, start)


def _follows(root: _Table) -> tuple[FollowConfig, ...]:
    follows: list[FollowConfig] = []
    for i, t in enumerate(root.tables("follow")):
        follow = _follow(t)
        for j, earlier in enumerate(follows):
            if (earlier.project_id, earlier.deploy_id) == (follow.project_id, follow.deploy_id):
                root.fail("follow", f"repeats follow[{j}] (same project_id and deploy_id)", i)
            if earlier.project_id == follow.project_id and None in (
                earlier.deploy_id,
                follow.deploy_id,
            ):  # two followers would read the pinned deployment while it is current
                root.fail(
                    "follow",
                    f"follows project {follow.project_id} as follow[{j}] does, one across "
                    "redeploys and one pinned to a deployment: its lines would be read twice; "
                    'keep one (start = "project" reads the older deployments too)',
                    i,
                )
        follows.append(follow)
    return tuple(follows)


def _labels(t: _Table | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    if t is None:
        return labels
    for label in list(t.data):
        if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
            t.fail(label, "is not a Loki label name: [a-zA-Z_][a-zA-Z0-9_]*, no leading __")
        if label in LINE_LABELS:
            t.fail(label, "is set by qc-tail for each line; choose another label name")
        labels[label] = t.string(label, "", _printable(0, 1024))
    return labels


def _loki_auth(t: _Table, prefix: str) -> tuple[str | None, str | None, str | None]:
    """``<prefix>username`` with ``<prefix>password_file``, or ``<prefix>bearer_token_file``:
    (user, password, token), the secrets read from their files."""
    user_key, password_key, bearer_key = (
        f"{prefix}{name}" for name in ("username", "password_file", "bearer_token_file")
    )
    username = t.string(user_key, None, _printable(1, 256))
    password_file = t.path(password_key, None)
    bearer_file = t.path(bearer_key, None)
    if (username is None) != (password_file is None):
        missing = user_key if username is None else password_key
        t.fail(missing, f"{user_key} and {password_key} go together")
    if bearer_file is not None and username is not None:
        t.fail(bearer_key, f"use either {user_key} and {password_key} or {bearer_key}")
    password = _read_secret(password_file, t.dotted(password_key)) if password_file else None
    bearer = _read_secret(bearer_file, t.dotted(bearer_key)) if bearer_file else None
    return username, password, bearer


def _loki(t: _Table) -> LokiConfig:
    d = LokiConfig("")
    url = t.string("url", d.url, _http_url, required=True)
    labels = _labels(t.table("labels"))
    tenant_id = t.string("tenant_id", d.tenant_id, _printable(0, 256))
    batch_size = t.integer("batch_size", d.batch_size, minimum=1)
    timezone = t.string("timezone", d.timezone, _zone)
    query_url = t.string("query_url", None, _http_url)
    username, password, bearer = _loki_auth(t, "")
    query_auth = _loki_auth(t, "query_")
    t.done()
    return LokiConfig(
        url=url,
        labels=labels,
        tenant_id=tenant_id,
        batch_size=batch_size,
        timezone=timezone,
        username=username,
        password=password,
        bearer_token=bearer,
        query_url=query_url,
        query_username=query_auth[0],
        query_password=query_auth[1],
        query_bearer_token=query_auth[2],
    )


def _output(t: _Table) -> OutputConfig:
    d = OutputConfig()
    stdout = t.boolean("stdout", d.stdout)
    format_ = t.string("format", d.format, _one_of(*FORMATS))
    directory = t.path("directory", d.directory)
    loki_table = t.table("loki")
    loki = _loki(loki_table) if loki_table else None
    t.done()
    return OutputConfig(stdout, format_, directory, loki)


def _section(root: _Table, name: str) -> _Table:
    return root.table(name) or _Table({}, name, root.src)


def load_config(path: Path | None, env: Mapping[str, str]) -> Config:
    """The configuration from ``path`` (None: defaults only) and ``env``; or ``ConfigError``."""
    data: dict[str, object] = {}
    src = _Source(None, Path())
    if path is not None:
        raw, file_stat = _read(path)
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"is not UTF-8 text (byte {e.start})", path=str(path)) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"invalid TOML: {e}", path=str(path)) from None
        except RecursionError:
            raise ConfigError("invalid TOML: nested too deeply", path=str(path)) from None
        api = data.get("api")
        if isinstance(api, dict) and "api_token" in api:
            _check_private(path, file_stat)
        src = _Source(str(path), path.absolute().parent)
    root = _Table(data, "", src)
    config = Config(
        api=_api(_section(root, "api"), env),
        poll=_poll(_section(root, "poll")),
        state=_state(_section(root, "state")),
        discovery=_discovery(_section(root, "discovery")),
        follows=_follows(root),
        output=_output(_section(root, "output")),
        metrics=_metrics(_section(root, "metrics"), env),
        source=None if path is None else path.absolute(),
    )
    root.done()
    return config

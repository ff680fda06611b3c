"""What ``qc-tail check`` tries besides the credentials: the directories, and Loki."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from tailer.config import Config, LokiConfig
from tailer.directories import probe
from tailer.errors import EX_UNAVAILABLE, QcTailError
from tailer.redaction import credentials_in, redact, redact_url

PROBE_TIMEOUT = (5.0, 10.0)
_PUSH_PATHS = ("/loki/api/v1/push", "/api/prom/push")

Say = Callable[[str], None]


def check_outputs(config: Config, say: Say, get: Callable[..., Any] = requests.get) -> int:
    """Say what the state and output directories and Loki look like; the exit code of the
    first problem found, else 0. ``get`` is ``requests.get`` (a stand-in in tests)."""
    problems: list[int] = []
    places = [("state.dir", config.state.dir)]
    if config.output.directory is not None:
        places.append(("output.directory", config.output.directory))
    for key, path in places:
        try:
            say(f"{key}: {path}: {probe(path)}")
        except QcTailError as exc:
            say(f"{key}: {exc}")
            problems.append(exc.exit_code)
    if config.output.loki is not None:
        answered, text = loki_answers(config.output.loki, get)
        say(f"loki: {text}")
        if not answered:
            problems.append(EX_UNAVAILABLE)
    return problems[0] if problems else 0


def ready_url(push_url: str) -> str:
    """Loki's ``/ready`` beside its push path; the push URL itself if its path is unknown."""
    parts = urlsplit(push_url)
    for path in _PUSH_PATHS:
        if parts.path.endswith(path):
            prefix = parts.path[: -len(path)]
            return urlunsplit(parts._replace(path=prefix + "/ready", query="", fragment=""))
    return push_url


def loki_answers(config: LokiConfig, get: Callable[..., Any] = requests.get) -> tuple[bool, str]:
    """Whether Loki answers at all (any HTTP status counts), and what it said."""
    url = ready_url(config.url)
    headers = {"X-Scope-OrgID": config.tenant_id} if config.tenant_id else {}
    if config.bearer_token:
        headers["Authorization"] = f"Bearer {config.bearer_token}"
    auth = None
    if config.username is not None and config.password is not None:
        auth = (config.username, config.password)
    shown = redact_url(url)
    try:
        response = get(
            url, headers=headers, auth=auth, timeout=PROBE_TIMEOUT, allow_redirects=False
        )
    except requests.RequestException as exc:
        return False, f"{shown}: no answer ({type(exc).__name__}); is Loki running there?"
    known = credentials_in(config.url, config.username, config.password, config.bearer_token)
    body = redact(response.text[:4096], known).strip().replace("\n", " ")[:80]
    text = f"{shown}: answers (HTTP {response.status_code}{': ' + body if body else ''})"
    if response.status_code in (401, 403):
        text += "; it refuses these credentials"
    return True, text

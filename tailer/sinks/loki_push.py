"""The write side of the Loki output: pushes, retried, split, and Loki's refusals counted."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from tailer import logs
from tailer.errors import OutputError, TransientError
from tailer.http import HttpError
from tailer.redaction import redact, redact_url
from tailer.retry import parse_retry_after
from tailer.sinks.loki_endpoint import Endpoint
from tailer.sinks.loki_refusal import HINTS, Refusal, problem, refusals

log = logs.get_logger(__name__)

PUSH_TIMEOUT = 15.0
"""Seconds for a whole push, connecting to the last byte of the answer."""
Value = tuple[int, str]  # (timestamp in ns, line)
Stream = tuple[dict[str, str], list[Value]]


class Unsure(OutputError):
    """A push that may have reached Loki and got no answer: not to be sent again blindly."""


class LokiPush:
    """Sends streams to ``/loki/api/v1/push`` in order, in pushes of about ``batch_size``.

    429, 5xx and failures to connect are retried; so are refusals other than 400 and 413 (a
    token being rotated, a proxy being set up), with one ``loki_refusing`` event while they
    last; when retries are over they raise OutputError. A push sent without an answer (a
    timeout, a reset) raises ``Unsure`` at once: Loki may have it. 413 splits a push in
    halves. A 400 refused the entries Loki names (Loki stores the rest): they are counted in
    ``dropped`` and reported, each reason once at warning level.
    """

    def __init__(self, endpoint: Endpoint, *, secrets: Sequence[str] = ()) -> None:
        self.endpoint = endpoint
        self.shown = endpoint.shown
        self._secrets = list(secrets)  # never in a message, in any form Loki could echo
        self._refusing: str | None = None
        self._reported: set[str] = set()
        self.dropped = 0
        self.pushes = 0

    def push_all(self, streams: Iterable[Stream], batch_size: int) -> None:
        for chunk in chunks(streams, batch_size):
            self._push(chunk)

    def _push(self, chunk: list[Stream]) -> None:
        retrying = self.endpoint.retrying()
        try:
            status, text = retrying(self._post, chunk)
        except TransientError as exc:
            error = OutputError(str(exc), output=self.shown)
            error.retry_after = exc.retry_after
            raise error from None
        count = sum(len(values) for _, values in chunk)
        if status == 413 and count > 1:  # too large for the endpoint: in halves, in order
            for half in _halves(chunk):
                self._push(half)
        elif status == 413:
            self._refused([Refusal("too large", 1)], text)
        elif status == 400:
            self._refused(refusals(text, count), text)

    def _post(self, chunk: list[Stream]) -> tuple[int, str]:
        body = json.dumps({"streams": [_stream(labels, values) for labels, values in chunk]})
        data = body.encode()
        headers = {"Content-Type": "application/json"}
        if len(data) > 1024:
            data = gzip.compress(data, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        try:
            response = self.endpoint.request("POST", data=data, headers=headers)
        except HttpError as exc:
            if exc.sent:
                raise Unsure(
                    f"{exc} after the push was sent; Loki is asked what it has before the "
                    "rest is pushed",
                    output=self.shown,
                ) from None
            raise TransientError(str(exc)) from None
        self.pushes += 1
        status = response.status
        text = bytes(response.body).decode("utf-8", "replace")
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.header("Retry-After"))
            raise TransientError(f"HTTP {status}", status=status, retry_after=retry_after)
        if not (200 <= status < 300 or status in (400, 413)):
            raise self.refusing(problem(status, redact_url(self.endpoint.url), response), text)
        if self._refusing is not None:
            log.info("loki_accepting", after=self._refusing)
            self._refusing = None
        return status, text

    def refusing(self, what: str, text: str) -> TransientError:
        """A refusal that time may lift (a token being rotated, a proxy being set up)."""
        if self._refusing is None:
            log.error(
                "loki_refusing",
                problem=what,
                loki_says=self.says(text),
                hint="waiting and retrying: nothing is lost while this lasts",
            )
        self._refusing = what
        return TransientError(what)

    def says(self, text: str) -> str:
        """What Loki (or a proxy) answered, as it may be shown: an echo of our credentials,
        or of any Authorization value, masked before the text is cut short."""
        return redact(text[:4096], self._secrets).strip()[:300]

    def _refused(self, found: list[Refusal], text: str) -> None:
        for refusal in found:
            self.dropped += refusal.entries
            report = log.debug if refusal.reason in self._reported else log.warning
            self._reported.add(refusal.reason)
            report(
                "loki_rejected",
                reason=refusal.reason,
                entries=refusal.entries,
                dropped_total=self.dropped,
                loki_says=self.says(text),
                hint=HINTS.get(refusal.reason, "not retried: Loki refused these entries"),
            )


def headers(tenant_id: str, bearer_token: str | None) -> dict[str, str]:
    """The tenant and bearer token headers a request to Loki carries."""
    found = {}
    if tenant_id:
        found["X-Scope-OrgID"] = tenant_id
    if bearer_token:
        found["Authorization"] = f"Bearer {bearer_token}"
    return found


def basic_auth(username: str | None, password: str | None) -> tuple[str, str] | None:
    return None if username is None or password is None else (username, password)


def _stream(labels: dict[str, str], values: list[Value]) -> dict[str, Any]:
    return {"stream": labels, "values": [[str(ns), text] for ns, text in values]}


def _halves(chunk: list[Stream]) -> list[list[Stream]]:
    """The chunk's entries in two pushes of about half as many, in the same order."""
    entries = [(labels, value) for labels, values in chunk for value in values]
    middle = len(entries) // 2
    return [_regroup(entries[:middle]), _regroup(entries[middle:])]


def _regroup(entries: list[tuple[dict[str, str], Value]]) -> list[Stream]:
    streams: list[Stream] = []
    for labels, value in entries:
        if streams and streams[-1][0] is labels:
            streams[-1][1].append(value)
        else:
            streams.append((labels, [value]))
    return streams


def chunks(streams: Iterable[Stream], batch_size: int) -> Iterator[list[Stream]]:
    """Pushes of at most about ``batch_size`` bytes, streams in the order given."""
    chunk: list[Stream] = []
    size = 0
    for labels, values in streams:
        if not values:
            continue
        current: list[Value] = []
        chunk.append((labels, current))
        for value in values:
            if size and size + len(value[1]) + 32 > batch_size:
                yield chunk
                current = []
                chunk = [(labels, current)]
                size = 0
            current.append(value)
            size += len(value[1]) + 32
    if size:
        yield chunk

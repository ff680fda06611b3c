"""What Grafana Loki already holds of a stream: the read side of the Loki output."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tailer.errors import TransientError
from tailer.http import HttpError, Response
from tailer.redaction import redact_url
from tailer.retry import parse_retry_after
from tailer.sinks.loki_endpoint import Endpoint
from tailer.sinks.loki_refusal import Refused, problem

NS = 1_000_000_000
MAX_SPAN = 30 * 86400 * NS  # Loki refuses longer queries by default (max_query_length: 721h)
TIMEOUT = 15.0
"""Seconds for a whole query, connecting to the last byte of the answer."""


def selector(labels: Mapping[str, str]) -> str:
    """The LogQL stream selector of exactly these labels: ``{a="1", b="x\\"y"}``."""
    pairs = (f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in labels.items())
    return "{" + ", ".join(pairs) + "}"


class LokiQuery:
    """Asks ``query_range`` for the newest entry of a stream within a span of time.

    Network errors, 429 and 5xx raise ``TransientError`` (after the policy's retries); any
    other refusal raises ``Refused``; a 2xx that is not a Loki query answer (a push-only
    gateway's page) raises ``Refused`` too.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def newest(self, labels: Mapping[str, str], start: int, end: int) -> int | None:
        """The timestamp of the stream's newest entry in ``[start, end]`` (ns), or None.

        A span longer than Loki allows in one query is asked for in parts, newest first.
        """
        query = selector(labels)
        high = end + 1  # Loki's end is exclusive
        while high > start:
            low = max(start, high - MAX_SPAN)
            retrying = self.endpoint.retrying()
            found: int | None = retrying(self._ask, query, low, high)
            if found is not None:
                return found
            high = low
        return None

    def _ask(self, query: str, start: int, end: int) -> int | None:
        params = {
            "query": query,
            "direction": "backward",
            "limit": "1",
            "start": str(start),
            "end": str(end),
        }
        try:
            response = self.endpoint.request("GET", params=params)
        except HttpError as exc:
            raise TransientError(f"query: {exc}") from None
        status = response.status
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.header("Retry-After"))
            raise TransientError(f"query: HTTP {status}", status=status, retry_after=retry_after)
        if not 200 <= status < 300:
            text = _text(response)
            raise Refused(status, problem(status, redact_url(self.endpoint.url), response), text)
        return _newest(response)


def _text(response: Response) -> str:
    return bytes(response.body[:65536]).decode("utf-8", "replace")


def _newest(response: Response) -> int | None:
    """The largest timestamp in a ``query_range`` answer of streams."""
    try:
        answer: Any = json.loads(response.body)
        data = answer["data"]
        if answer["status"] != "success" or data["resultType"] != "streams":
            raise ValueError(answer["status"])
        stamps = [int(value[0]) for stream in data["result"] for value in stream["values"]]
    except (ValueError, KeyError, TypeError, IndexError):
        reason = "the answer is not a Loki query result"
        raise Refused(response.status, reason, _text(response)) from None
    return max(stamps, default=None)

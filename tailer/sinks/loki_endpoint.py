"""One Loki URL and how to call it: the push side and the query side each have one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tenacity import Retrying

from tailer.http import HttpClient, Response
from tailer.redaction import redact_url
from tailer.retry import RetryPolicy, Sleep, transient_retrying


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``request`` sends the endpoint's own headers (tenant, token) and credentials, within
    a whole-request ``timeout``; ``retrying`` is a fresh tenacity loop of its ``policy``."""

    url: str
    http: HttpClient
    policy: RetryPolicy
    sleep: Sleep
    timeout: float
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: tuple[str, str] | None = None

    @property
    def shown(self) -> str:
        """How messages name it: without credentials."""
        return f"Loki at {redact_url(self.url)}"

    def request(
        self,
        method: str,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        return self.http.request(
            method,
            self.url,
            {**self.headers, **(headers or {})},
            data=data,
            params=params,
            auth=self.auth,
            timeout=self.timeout,
        )

    def retrying(self) -> Retrying:
        return transient_retrying(self.policy, sleep=self.sleep)

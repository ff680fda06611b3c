"""The QuantConnect client: the only module that speaks HTTP to QuantConnect."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeGuard

from tailer import logs
from tailer.auth import QcAuth
from tailer.budget import RequestBudget
from tailer.errors import (
    AnswerTooLargeError,
    ApiError,
    AuthError,
    ConfigError,
    ExportError,
    NotFoundError,
    ProtocolError,
    QcTailError,
    TransientError,
    UnreachableError,
    WindowTooLargeError,
)
from tailer.http import HttpClient, HttpError, Response, TlsError, TooLargeError
from tailer.redaction import redact_url
from tailer.retry import (
    AuthRejected,
    RetryPolicy,
    Sleep,
    auth_retrying,
    parse_retry_after,
    transient_retrying,
)

if TYPE_CHECKING:
    from tailer.metrics import Tally

log = logs.get_logger(__name__)

TERMINAL_STATUSES = frozenset(
    {"Stopped", "Liquidated", "Deleted", "Completed", "RuntimeError", "DeployError", "Invalid"}
)
_AUTH_ERRORS = ("Hash doesn't match", "UserID not valid")
_CACHE_SIZE = 64
_SHARED_STEP = 0.1
"""Seconds between the signs of life of a read waiting for the same read in flight."""
_USER_AGENT = "qc-tail/0.1 (+https://pypi.org/project/qc-tailer/)"
_HEADERS = {
    "Accept": "application/json",
    "Content-Type": "application/json",
    "User-Agent": _USER_AGENT,
}
_EXPORT = "/live/export/logs"
_EXPORT_HEADERS = {**_HEADERS, "Accept": "application/octet-stream, application/json"}


class _BareServerError(TransientError):
    """HTTP 500 with an empty body: a passing fault, or QuantConnect's old way of refusing
    credentials. Retried as transient; the final message mentions both readings."""


@dataclass(frozen=True, slots=True)
class LogWindow:
    """One answer of /live/logs/read: project-wide rows and where the deployment begins, and,
    on the API client's clock, when it was asked and answered (the server served it in
    between; unknown for one not read from the API, such as an export's)."""

    logs: tuple[str, ...]
    length: int
    deployment_offset: int
    asked: float = field(default=-math.inf, compare=False)
    answered: float = field(default=math.inf, compare=False)


@dataclass(frozen=True, slots=True)
class Deployment:
    """A live deployment as /live/read and /live/list describe it."""

    project_id: int
    deploy_id: str
    status: str
    launched: datetime | None = None
    stopped: datetime | None = None
    project_name: str | None = None

    @property
    def terminal(self) -> bool:
        """Unknown statuses count as running: better to poll too long than to stop early."""
        return self.status in TERMINAL_STATUSES


def parse_time(value: object) -> datetime | None:
    """``YYYY-MM-DD HH:MM:SS`` (UTC) or ISO-8601, as the API sends either."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class QcApi:
    """Typed calls to the QuantConnect REST API, with retries, budget and clock correction."""

    def __init__(
        self,
        base_url: str,
        auth: QcAuth,
        *,
        timeout: float = 30.0,
        policy: RetryPolicy | None = None,
        budget: RequestBudget | None = None,
        sleep: Sleep = time.sleep,
        stop_event: threading.Event | None = None,
        ca_bundle: Path | None = None,
        http: HttpClient | None = None,
        metrics: Tally | None = None,
        cache_ttl: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics  # counts every HTTP attempt by endpoint and outcome
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self.budget = budget or RequestBudget()
        self._sleep = sleep
        try:
            self.http = http or HttpClient(pool_size=self.budget.max_in_flight, ca_bundle=ca_bundle)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ConfigError(f"cannot use it: {_reason(exc)}", key="api.ca_bundle") from None
        # Built once: retry state lives per thread inside tenacity, so these are shareable.
        self._transient = transient_retrying(self.policy, sleep=sleep, stop_event=stop_event)
        self._signed = auth_retrying(self.policy, sleep=sleep, stop_event=stop_event)
        self.cache_ttl = cache_ttl  # see read_logs
        self._clock = clock  # ages the cached answers, and says when each was asked
        self._cache: dict[tuple[int, str, int, int], tuple[float, LogWindow]] = {}
        self._cache_lock = threading.Lock()
        self._reading: dict[tuple[int, str, int, int], threading.Event] = {}  # in flight

    def close(self) -> None:
        """Close the kept-alive connections (a later call opens new ones)."""
        self.http.close()

    def pause(self, seconds: float) -> None:
        """Wait with the client's own sleep (which a stop request cuts short)."""
        self._sleep(seconds)

    # -- endpoints -----------------------------------------------------------------------

    def authenticate(self) -> None:
        self.call("/authenticate", {})

    def read_logs(
        self, project_id: int, deploy_id: str, start: int, end: int, *, fresh: bool = False
    ) -> LogWindow:
        """Rows [start, end) of the project's log, as seen with ``deploy_id``'s offset.

        With ``cache_ttl`` set, an identical read within that many seconds is answered from
        memory: pipelines that follow the same deployment then cost one request, not two.
        One asked while the same read is in flight (another pipeline's worker) waits for it.
        ``fresh`` asks the API again all the same (to confirm an answer by a second one).
        """
        if not self.cache_ttl:
            return self._read_stamped(project_id, deploy_id, start, end)
        key = (project_id, deploy_id, start, end)
        if fresh:
            window = self._read_stamped(project_id, deploy_id, start, end)
            with self._cache_lock:
                self._cache[key] = (self._clock(), window)
            return window
        while True:
            with self._cache_lock:
                hit = self._cache.get(key)
                if hit is not None and self._clock() - hit[0] < self.cache_ttl:
                    return hit[1]
                reading = self._reading.get(key)
                if reading is None:
                    self._reading[key] = threading.Event()
                    break
            # Then from the cache, or (that read failed) asked again. The other read may be
            # waiting out a Retry-After or a backoff: this is a wait as deliberate as its
            # own, so it goes through the client's sleep (a sign of life for the watchdog).
            while not reading.wait(_SHARED_STEP):
                self._sleep(0.0)
        try:
            window = self._read_stamped(project_id, deploy_id, start, end)
            with self._cache_lock:
                self._cache[key] = (self._clock(), window)
                while len(self._cache) > _CACHE_SIZE:
                    self._cache.pop(next(iter(self._cache)))
        finally:
            with self._cache_lock:
                self._reading.pop(key).set()
        return window

    def _read_stamped(self, project_id: int, deploy_id: str, start: int, end: int) -> LogWindow:
        """``_read_logs``, stamped with when it was asked and answered (retries included)."""
        asked = self._clock()
        window = self._read_logs(project_id, deploy_id, start, end)
        return replace(window, asked=asked, answered=self._clock())

    def _read_logs(self, project_id: int, deploy_id: str, start: int, end: int) -> LogWindow:
        """One window; a read at or past the log's end that the API refuses (where the
        documentation is silent) is answered as one it allows would be: no rows."""
        try:
            return self._read_window(project_id, deploy_id, start, end)
        except ApiError as exc:
            if type(exc) is not ApiError:  # not found, window too large: what they say
                raise
            if start == 0:  # no row to ask the numbers with: the refusal's words must say
                if not _out_of_range(str(exc)):
                    raise
                return LogWindow((), 0, 0)
            numbers = self._read_logs(project_id, deploy_id, 0, 1)
            if numbers.length > start:  # not past the end after all, or no longer
                return self._read_window(project_id, deploy_id, start, end)
            log.debug("read_past_end", project=project_id, start=start, length=numbers.length)
            return LogWindow((), numbers.length, numbers.deployment_offset)

    def _read_window(self, project_id: int, deploy_id: str, start: int, end: int) -> LogWindow:
        body = {
            "format": "json",
            "projectId": project_id,
            "algorithmId": deploy_id,
            "startLine": start,
            "endLine": end,
        }
        data = self.call("/live/logs/read", body)
        logs, length, offset = data.get("logs"), data.get("length"), data.get("deploymentOffset")
        if logs is None and "logs" in data:  # null: the answer's way of saying "no rows"
            logs = []
        if not isinstance(logs, list) or not _all_strings(logs):
            raise ProtocolError("/live/logs/read: 'logs' is not a list of strings")
        if not _is_count(length) or not _is_count(offset):
            raise ProtocolError(
                f"/live/logs/read: bad length ({type(length).__name__}) "
                f"or deploymentOffset ({type(offset).__name__})"
            )
        if offset > length or len(logs) > max(0, end - start):
            raise ProtocolError(
                f"/live/logs/read: inconsistent answer (offset {offset}, length {length}, "
                f"{len(logs)} rows for a window of {end - start})"
            )
        return LogWindow(tuple(logs), length, offset)

    def export_logs(
        self, project_id: int, deploy_id: str, into: IO[bytes], *, timeout: float
    ) -> None:
        """The project's whole log, as a file written to ``into``; ExportError says why not.

        One attempt, never retried: the caller has windows to fall back on, and every attempt
        may spend one of the account's few exports.
        """
        payload = json.dumps({"projectId": project_id, "deployId": deploy_id}).encode()
        with self.budget.slot():
            try:
                response = self.http.request(
                    "POST",
                    self.base_url + _EXPORT,
                    _EXPORT_HEADERS,
                    timeout=timeout,
                    data=payload,
                    auth=self.auth,
                    into=into,
                )
            except TooLargeError as exc:
                raise ExportError("too_large", f"{_EXPORT}: {exc}") from None
            except HttpError as exc:
                cut = into.tell() > 0 or "IncompleteRead" in str(exc)  # a file had begun
                reason = "truncated" if cut else "unreachable"
                raise ExportError(reason, f"{_EXPORT}: {exc}") from None
        self.auth.clock.observe(response.header("Date"))
        _export_verdict(response)

    def read_live(self, project_id: int) -> Deployment:
        data = self.call("/live/read", {"projectId": project_id})
        return _deployment(data, project_id)

    def list_live(
        self, status: str | None = None, project_id: int | None = None
    ) -> list[Deployment]:
        """The account's live deployments, or ``project_id``'s: that filter is applied here
        too, as the API documents only ``status`` and may answer with every project's."""
        body: dict[str, Any] = {}
        if status is not None:
            body["status"] = status
        if project_id is not None:
            body["projectId"] = project_id
        live = self.call("/live/list", body).get("live")
        if not isinstance(live, list):
            raise ProtocolError("/live/list: 'live' is not a list")
        found = []
        for item in live:
            if not isinstance(item, dict) or not _is_count(item.get("projectId")):
                continue
            if project_id is None or item["projectId"] == project_id:
                found.append(_deployment(item, item["projectId"]))
        return found

    def projects(self) -> dict[int, str]:
        """Every project of the account, by id, with its name."""
        found: dict[int, str] = {}
        projects = self.call("/projects/read", {}).get("projects")
        for project in projects if isinstance(projects, list) else []:
            if isinstance(project, dict) and _is_count(project.get("projectId")):
                name = project.get("name")
                found[project["projectId"]] = name if isinstance(name, str) else ""
        return found

    def project_name(self, project_id: int) -> str | None:
        projects = self.call("/projects/read", {"projectId": project_id}).get("projects")
        if isinstance(projects, list):
            for project in projects:
                if isinstance(project, dict) and project.get("projectId") == project_id:
                    name = project.get("name")
                    return name if isinstance(name, str) else None
        return None

    # -- transport -----------------------------------------------------------------------

    def call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path``: transient failures retried, refusals re-signed.

        The first attempt runs bare: tenacity's bookkeeping is a noticeable share of a
        catch-up request's CPU (bench/catchup.py). Only when it fails do the retry loops start,
        taking that failure as their first attempt (so the counts are unchanged).
        """
        try:
            return self._post_once(path, body)
        except (TransientError, AuthRejected) as exc:
            failed: list[Exception] = [exc]
            bare = [isinstance(exc, _BareServerError)]  # was each failure an empty-body 500?

        def attempt(path: str, body: Mapping[str, Any]) -> dict[str, Any]:
            if failed:
                raise failed.pop()
            try:
                return self._post_once(path, body)
            except (TransientError, AuthRejected) as exc:
                bare.append(isinstance(exc, _BareServerError))
                raise

        try:
            return self._transient(self._signed_call, attempt, path, body)
        except TransientError as exc:
            message = f"{redact_url(self.base_url)}{path}: giving up for now: {exc}"
            if all(bare):
                message += (
                    " (every failure was a bare HTTP 500, which is also how QuantConnect has "
                    "refused credentials: if this persists, run `qc-tail check` to test them)"
                )
            raise UnreachableError(message) from None

    def _signed_call(
        self, attempt: Callable[[str, Mapping[str, Any]], dict[str, Any]], path: str, body: Any
    ) -> dict[str, Any]:
        try:
            return self._signed(attempt, path, body)
        except AuthRejected as exc:
            raise self._auth_error(str(exc)) from None

    def _post_once(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if self.metrics is None:
            return self._post(path, body)
        try:
            data = self._post(path, body)
        except AuthRejected:
            self.metrics.request(path, "auth")
            raise
        except TransientError as exc:
            self.metrics.request(path, "throttled" if exc.status == 429 else "retried")
            raise
        except QcTailError:
            self.metrics.request(path, "failed")
            raise
        self.metrics.request(path, "ok")
        return data

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body, separators=(",", ":")).encode()
        with self.budget.slot():
            try:
                response = self.http.post(
                    self.base_url + path, payload, _HEADERS, timeout=self.timeout, auth=self.auth
                )
            except TlsError as exc:
                raise ApiError(
                    f"{redact_url(self.base_url)}: TLS verification failed ({exc}); if the server "
                    "uses a private certificate authority, set api.ca_bundle to its certificate"
                ) from None
            except TooLargeError as exc:
                if path == "/live/logs/read":  # a smaller window may fit: not worth a retry
                    raise AnswerTooLargeError(f"{path}: {exc}") from None
                raise TransientError(f"{path}: {exc}") from None
            except HttpError as exc:
                raise TransientError(f"{path}: {exc}") from None
        self.auth.clock.observe(response.header("Date"))
        return self._classify(path, response)

    def _classify(self, path: str, response: Response) -> dict[str, Any]:
        status = response.status
        if status == 429:
            retry_after = _retry_after(response)
            if retry_after is not None:
                retry_after = min(retry_after, self.policy.retry_after_cap)
            self.budget.throttled(retry_after)
            raise TransientError(f"{path}: HTTP 429", status=429, retry_after=retry_after)
        if status in (401, 403):
            raise AuthRejected(f"{path}: HTTP {status}")
        if 300 <= status < 400:
            where = _redact(response.header("Location") or "?")[:200]
            raise ApiError(f"{path}: HTTP {status} redirect to {where} not followed", status=status)
        if status == 500 and not response.body.strip():
            if path == "/authenticate":  # the call that only checks credentials
                raise AuthRejected(f"{path}: HTTP 500 with an empty body")
            raise _BareServerError(f"{path}: HTTP 500 with an empty body", status=status)
        if status >= 500 or status == 408:
            raise TransientError(f"{path}: HTTP {status}", status=status)
        if status != 200:
            raise ApiError(f"{path}: HTTP {status}: {_snippet(response)}", status=status)
        try:
            data = json.loads(response.body)
        except (ValueError, RecursionError):
            raise ProtocolError(f"{path}: the answer is not valid JSON") from None
        if not isinstance(data, dict):
            raise ProtocolError(f"{path}: the answer is not a JSON object")
        self.budget.succeeded()
        if data.get("success") is not True:
            raise _refusal(path, _errors(data))
        return data

    def _auth_error(self, detail: str) -> AuthError:
        skew = self.auth.clock.last_skew
        if skew is not None and abs(skew) >= 5:
            why = (
                f"the local clock is {round(skew)} s off the server's and the request was "
                "still refused even when signed with the server's time: check the clock (NTP) "
                "and the credentials"
            )
        else:
            why = (
                "the local clock agrees with the server's, so the user id or API token is "
                "wrong: check QC_USER_ID / api.user_id and QC_API_TOKEN / api.api_token_file"
            )
        tries = self.policy.auth_attempts
        return AuthError(
            f"QuantConnect refused the credentials of user {self.auth.user_id} "
            f"({tries} freshly signed attempts, last: {detail}); {why}",
            skew=skew,
        )


def _all_strings(items: list[Any]) -> bool:
    """Whether every item is a str (str.join checks it at C speed; a catch-up has 100,000)."""
    try:
        "".join(items)
    except TypeError:
        return False
    return True


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def _errors(data: Mapping[str, Any]) -> list[str]:
    for key in ("errors", "messages"):
        value = data.get(key)
        if isinstance(value, list) and value:
            return [str(item) for item in value]
    message = data.get("Message") or data.get("message")
    return [str(message)] if message else ["success is not true, and no error was given"]


def _out_of_range(text: str) -> bool:
    """Whether a refusal's words say the rows asked for are past the log's end."""
    lowered = text.lower()
    return any(word in lowered for word in ("range", "exceed", "beyond", "past the end"))


def _refusal(path: str, errors: list[str]) -> Exception:
    first = errors[0]
    text = _redact(f"{path}: {'; '.join(errors)}"[:500])
    if first.startswith(_AUTH_ERRORS):
        return AuthRejected(text)
    lowered = first.lower()
    if "no live deployment" in lowered or "not found" in lowered or "does not exist" in lowered:
        return NotFoundError(text)
    if (
        "pages up to" in lowered
        or "page size" in lowered
        or "maximum number of log lines" in (lowered)
    ):
        return WindowTooLargeError(text)
    return ApiError(text)


def _export_verdict(response: Response) -> None:
    """Nothing if the answer is the file; else the ExportError that says why it is not."""
    status = response.status
    kind = (response.header("Content-Type") or "").split(";")[0].strip().lower()
    if status == 200 and kind != "application/json":
        return
    reasons = {404: "unknown_endpoint", 429: "over_quota", 401: "auth", 403: "auth"}
    reason = reasons.get(status, "server_error" if status >= 500 else "refused")
    detail = f"HTTP {status}"
    if status == 200:
        try:
            data = json.loads(response.body)
        except (ValueError, RecursionError):
            raise ExportError("malformed", f"{_EXPORT}: neither a file nor JSON") from None
        if not isinstance(data, dict) or data.get("success") is True:
            raise ExportError("malformed", f"{_EXPORT}: JSON where a file was expected")
        errors = _errors(data)
        detail = _redact("; ".join(errors)[:300])
        lowered = detail.lower()
        if errors[0].startswith(_AUTH_ERRORS):
            reason = "auth"
        elif "limit" in lowered or "quota" in lowered or "too many" in lowered:
            reason = "over_quota"
        elif "unknown endpoint" in lowered:
            reason = "unknown_endpoint"
    raise ExportError(reason, f"{_EXPORT}: {detail}", status=status)


def _deployment(data: Mapping[str, Any], project_id: int) -> Deployment:
    deploy_id, status = data.get("deployId"), data.get("status")
    if not isinstance(deploy_id, str) or not deploy_id:
        raise ProtocolError("deployment without a deployId")
    name = data.get("projectName")
    return Deployment(
        project_id=project_id,
        deploy_id=deploy_id,
        status=status if isinstance(status, str) else "Undefined",
        launched=parse_time(data.get("launched")),
        stopped=parse_time(data.get("stopped")),
        project_name=name if isinstance(name, str) and name else None,
    )


def _retry_after(response: Response) -> float | None:
    return parse_retry_after(response.header("Retry-After"))


def _snippet(response: Response) -> str:
    text = response.body[:4096].decode("utf-8", "replace").strip().replace("\n", " ")
    return _redact(text[:200]) or "(empty body)"


_SECRETS = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")  # hex signatures and base64 headers alike


def _redact(text: str) -> str:
    """Server-supplied text, minus anything shaped like our signature or Authorization value
    (a hostile server could echo them back into an error message)."""
    return _SECRETS.sub("[redacted]", text)


def _reason(exc: BaseException) -> str:
    """The innermost cause's message, short and free of request headers."""
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    return str(exc)[:300] or type(exc).__name__

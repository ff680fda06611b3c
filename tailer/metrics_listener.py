"""The metrics listener: ``/metrics`` for Prometheus and ``/healthz``, on one address."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from tailer import logs
from tailer.errors import CannotListenError
from tailer.metrics import Metrics

log = logs.get_logger(__name__)

Verdict = Callable[[], str | None]
"""Why the process is unhealthy now, or None while it makes progress."""
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Quiet(WSGIRequestHandler):
    """No access log (a scrape every 15 s would flood the journal); each answer leaves at
    once rather than waiting on the scraper's delayed ACK."""

    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def application(metrics: Metrics, health: Verdict) -> Callable[..., Iterable[bytes]]:
    """The WSGI app: ``/healthz`` here, everything else prometheus_client's own."""
    scrape = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/healthz":
            return scrape(environ, start_response)  # type: ignore[no-any-return]
        reason = health()
        status = "200 OK" if reason is None else "503 Service Unavailable"
        body = f"{reason or 'ok'}\n".encode()
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body]

    return app


class MetricsListener:
    """Serves the app on ``(host, port)`` from a daemon thread until ``close``."""

    def __init__(self, address: tuple[str, int], metrics: Metrics, health: Verdict) -> None:
        host, port = address

        class Server(ThreadingWSGIServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        try:
            self._server = make_server(
                host, port, application(metrics, health), Server, handler_class=_Quiet
            )
        except OSError as exc:
            raise CannotListenError(
                f"metrics.listen: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self.port: int = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        log.info("metrics_listening", host=host, port=self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

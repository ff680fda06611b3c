"""No secret in any output: Loki's password or token, in its URL or its files, never shows in
an event (at debug level) or a message, whether Loki refuses them, echoes them or is gone."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tailer.emulator import Emulator

from .conftest import LOKI_SECRET, LOKI_USER, PROJECT, run, secrets_in, stamp
from .loki_recorder import PUSH_PATH, LokiRecorder


class EchoingLoki:
    """Answers every push with ``status`` and a body that repeats the request's headers, as
    a proxy's or a gateway's error page may."""

    def __init__(self, status: int) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                authorization = self.headers.get("Authorization")
                body = f"Authorization: {authorization} refused; you sent:\n{self.headers}"
                body = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}127.0.0.1:{self.server.server_address[1]}{PUSH_PATH}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echo_400() -> Iterator[EchoingLoki]:
    server = EchoingLoki(400)
    yield server
    server.stop()


@pytest.fixture
def refusing() -> Iterator[LokiRecorder]:
    with LokiRecorder(check_age=False, require_auth="Bearer another-token") as loki:
        yield loki


def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "loki-secret"
    path.write_text(LOKI_SECRET + "\n")
    path.chmod(0o600)
    return path


def config(tmp_path: Path, emu: Emulator, url: str, *loki: str) -> Path:
    path = tmp_path / "qc-tail.toml"
    lines = [
        "[poll]",
        "interval = 0.05",
        "[state]",
        f'dir = "{tmp_path / "state"}"',
        "[discovery]",
        "enabled = false",
        "[[follow]]",
        f"project_id = {PROJECT}",
        "[output]",
        f'directory = "{tmp_path / "out"}"',
        "[output.loki]",
        f'url = "{url}"',
        *loki,
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def deployed(emu: Emulator) -> Emulator:
    emu.deploy(PROJECT)
    emu.write(PROJECT, [stamp(n) for n in range(20)])
    emu.publish()
    return emu


def run_once(emu: Emulator, path: Path) -> tuple[int, str]:
    result = run(emu, "--config", str(path), "run", "--once")  # at debug level
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert secrets_in(output) == []
    return result.returncode, output


def events(output: str, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if f'"{name}"' in line]


def test_credentials_in_the_url_of_a_loki_that_refuses_them(tmp_path, deployed, refusing):
    url = refusing.url.replace("http://", f"http://{LOKI_USER}:{LOKI_SECRET}@")
    code, output = run_once(deployed, config(tmp_path, deployed, url))
    assert code == 74, output  # waited out (a token may be being rotated), then named
    (refused,) = events(output, "loki_refusing")
    assert "HTTP 401" in refused["problem"] and "***@" in refused["problem"]
    assert refusing.authorizations  # the credentials were sent: they just never show


@pytest.mark.parametrize("form", ["password_file", "bearer_token_file", "url"])
def test_a_loki_that_echoes_the_credentials_back_in_a_400(tmp_path, deployed, echo_400, form):
    if form == "url":
        path = config(tmp_path, deployed, echo_400.url(f"{LOKI_USER}:{LOKI_SECRET}@"))
    elif form == "password_file":
        secret = secret_file(tmp_path)
        loki = [f'username = "{LOKI_USER}"', f'password_file = "{secret}"']
        path = config(tmp_path, deployed, echo_400.url(), *loki)
    else:
        secret = secret_file(tmp_path)
        path = config(tmp_path, deployed, echo_400.url(), f'bearer_token_file = "{secret}"')
    code, output = run_once(deployed, path)
    assert code == 0, output
    (rejected,) = events(output, "loki_rejected")
    assert "Authorization" in rejected["loki_says"]  # echoed, and its value masked


def test_credentials_in_the_url_of_a_loki_that_is_gone(tmp_path, deployed):
    url = f"http://{LOKI_USER}:{LOKI_SECRET}@127.0.0.1:{closed_port()}{PUSH_PATH}"
    code, output = run_once(deployed, config(tmp_path, deployed, url))
    assert code != 0
    assert "Loki at http://***@127.0.0.1:" in output


def test_a_config_error_in_a_url_with_credentials(tmp_path, deployed):
    url = f"http://{LOKI_USER}:{LOKI_SECRET}@127.0.0.1:99999{PUSH_PATH}"
    code, output = run_once(deployed, config(tmp_path, deployed, url))
    assert code == 78
    assert "output.loki.url" in output and "***@127.0.0.1:99999" in output


def test_a_config_error_in_a_base_url_with_credentials(tmp_path, deployed):
    result = run(deployed, "check", QC_BASE_URL=f"http://{LOKI_USER}:{LOKI_SECRET}@h:0/api/v2")
    assert result.returncode == 78
    assert secrets_in(result.stdout + result.stderr) == []
    assert "QC_BASE_URL" in result.stderr and "***@h:0" in result.stderr

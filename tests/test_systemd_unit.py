"""Static checks of the shipped systemd unit and logrotate snippet (systemd/).

Nothing here starts systemd or a service: ``systemd-analyze verify`` and ``security --offline``
load the unit client-side, and logrotate runs on copies under ``tmp_path``. ``verify`` exits 0
on unknown keys and bad values (it only warns), so any output at all is a failure. It exits 1
when an Exec binary is missing, so it checks a copy whose ExecStart names a binary that exists.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tailer.config import CREDENTIAL_NAME
from tailer.errors import EX_CONFIG, EX_NOPERM, EX_TEMPFAIL

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "qc-tail.service"
LOGROTATE = ROOT / "systemd" / "qc-tail.logrotate"
SHIPPED_BINARY = "/usr/local/bin/qc-tail"
MAX_EXPOSURE = 1.5
EXIT_CREDENTIALS = 243  # systemd's own: LoadCredential= found nothing to load
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

systemd_analyze = shutil.which("systemd-analyze", path=SBIN_PATH)
logrotate = shutil.which("logrotate", path=SBIN_PATH)
needs_systemd_analyze = pytest.mark.skipif(
    systemd_analyze is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)
needs_logrotate = pytest.mark.skipif(
    logrotate is None, reason="logrotate is not installed (apt-get install logrotate)"
)


def _existing_qc_tail() -> str:
    """An executable that exists here, to stand in for /usr/local/bin/qc-tail."""
    candidates = [Path(sys.executable).with_name("qc-tail"), shutil.which("qc-tail"), "/bin/true"]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return str(Path(candidate).absolute())
    pytest.skip("no executable to stand in for qc-tail in ExecStart")


def _unit_copy(directory: Path, text: str | None = None) -> Path:
    """The shipped unit under ``directory`` with ExecStart naming an existing binary."""
    text = UNIT.read_text() if text is None else text
    assert f"\nExecStart={SHIPPED_BINARY} " in text
    text = text.replace(f"\nExecStart={SHIPPED_BINARY} ", f"\nExecStart={_existing_qc_tail()} ")
    if not os.access("/bin/kill", os.X_OK):  # procps is not in every container image
        text = text.replace("\nExecReload=/bin/kill ", "\nExecReload=/bin/true ")
    copy = directory / UNIT.name
    copy.write_text(text)
    return copy


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert systemd_analyze is not None
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [systemd_analyze, "--no-pager", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        timeout=60,
        check=False,
    )


def _exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert match, f"no overall exposure in the output:\n{output}"
    return float(match.group(1))


def _parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value, in order (unit files repeat keys; no line continuations)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"line {number}: keep unit lines unbroken"
        if line.startswith("[") and line.endswith("]"):
            section = sections.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"line {number}: a key outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"line {number}: not key=value: {raw!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


# -- systemd-analyze ---------------------------------------------------------------------------


@needs_systemd_analyze
def test_verify_is_silent(tmp_path: Path) -> None:
    result = _analyze("verify", "--man=no", str(_unit_copy(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


@needs_systemd_analyze
def test_verify_speaks_up_on_a_misspelled_key(tmp_path: Path) -> None:
    """Why the check above demands silence: verify exits 0 on a typo, with only a warning."""
    text = UNIT.read_text().replace("\nProtectHome=yes\n", "\nProtectHomme=yes\n")
    result = _analyze("verify", "--man=no", str(_unit_copy(tmp_path, text)))
    assert "ProtectHomme" in result.stdout + result.stderr


@needs_systemd_analyze
def test_security_exposure_is_at_most_1_5(tmp_path: Path) -> None:
    threshold = round(MAX_EXPOSURE * 10)  # --threshold= counts 0..100, the display 0.0..10.0
    result = _analyze(
        "security", "--offline=true", f"--threshold={threshold}", str(_unit_copy(tmp_path))
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert _exposure(output) <= MAX_EXPOSURE, output


@needs_systemd_analyze
def test_security_threshold_rejects_a_bare_unit(tmp_path: Path) -> None:
    """The threshold bites: the same service without its hardening fails it."""
    bare = (
        "[Unit]\nDescription=bare\n\n[Service]\nType=notify\n"
        f"ExecStart={SHIPPED_BINARY} run\n\n[Install]\nWantedBy=multi-user.target\n"
    )
    result = _analyze(
        "security", "--offline=true", "--threshold=15", str(_unit_copy(tmp_path, bare))
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert _exposure(output) > MAX_EXPOSURE


# -- what the unit promises ----------------------------------------------------------------------


def test_unit_has_the_required_settings() -> None:
    unit = _parse_unit(UNIT.read_text())
    service = {key: values[-1] for key, values in unit["Service"].items()}
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": f"{SHIPPED_BINARY} --config /etc/qc-tail/config.toml run",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
        "RestartSec": "5s",
        "WatchdogSec": "60s",
        "TimeoutStopSec": "10s",
        "DynamicUser": "yes",
        "StateDirectory": "qc-tail",
        "StateDirectoryMode": "0750",
        "LogsDirectory": "qc-tail",
        "LogsDirectoryMode": "0750",
        "ConfigurationDirectory": "qc-tail",
        "UMask": "0027",
        "LoadCredential": f"{CREDENTIAL_NAME}:/etc/qc-tail/api-token",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
    }
    assert {key: service.get(key) for key in expected} == expected
    # Restarting cannot fix a held state directory, a rejected token, a bad config, or a
    # token file systemd cannot load (243/CREDENTIALS).
    prevent = {int(code) for code in service["RestartPreventExitStatus"].split()}
    assert prevent == {EX_TEMPFAIL, EX_NOPERM, EX_CONFIG, EXIT_CREDENTIALS}
    # HTTPS over IPv4/IPv6, AF_UNIX for $NOTIFY_SOCKET; nothing may cut the network off.
    families = set(" ".join(unit["Service"]["RestrictAddressFamilies"]).split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert service.get("PrivateNetwork", "no") == "no"
    assert "IPAddressDeny" not in service
    assert "ReadOnlyPaths" not in service  # the state and logs directories stay writable

    assert unit["Unit"]["StartLimitIntervalSec"] and unit["Unit"]["StartLimitBurst"]
    assert "network-online.target" in unit["Unit"]["After"][-1].split()
    assert "network-online.target" in unit["Unit"]["Wants"][-1].split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_unit_directories_match_the_example_config() -> None:
    """StateDirectory= and LogsDirectory= are the paths config.example.toml names."""
    config = tomllib.loads((ROOT / "config.example.toml").read_text())
    service = _parse_unit(UNIT.read_text())["Service"]
    assert config["state"]["dir"] == "/var/lib/" + service["StateDirectory"][-1]
    assert config["output"]["directory"] == "/var/log/" + service["LogsDirectory"][-1]
    assert f"/var/log/{service['LogsDirectory'][-1]}/*/*.log {{" in LOGROTATE.read_text()


def test_memory_deny_write_execute_carries_its_caveat() -> None:
    text = UNIT.read_text()
    assert "\nMemoryDenyWriteExecute=yes\n" in text
    before = text.split("\nMemoryDenyWriteExecute=yes\n")[0].rsplit("\n\n", 1)[-1]
    assert "ctypes" in before and "remove this line" in before


# -- logrotate -----------------------------------------------------------------------------------


def _directives(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_logrotate_creates_never_copytruncates() -> None:
    text = LOGROTATE.read_text()
    words = [line.strip() for line in text.splitlines() if not line.strip().startswith("#")]
    assert "create 0640" in words
    assert "copytruncate" not in " ".join(words)
    for directive in ("compress", "delaycompress", "missingok", "notifempty", "sharedscripts"):
        assert directive in words
    assert "systemctl reload qc-tail.service >/dev/null 2>&1 || true" in words
    assert {"daily", "weekly"} & set(words)
    assert any(re.fullmatch(r"rotate \d+", word) for word in words)


def _logrotate_setup(tmp_path: Path, postrotate: str) -> tuple[Path, Path]:
    """The DynamicUser layout under tmp_path: log/qc-tail -> private/qc-tail, dirs 0750."""
    logs = tmp_path / "log"
    project = logs / "private" / "qc-tail" / "23456789"
    project.mkdir(parents=True)
    (logs / "private").chmod(0o700)
    (logs / "private" / "qc-tail").chmod(0o750)
    project.chmod(0o750)
    (logs / "qc-tail").symlink_to("private/qc-tail")
    text = LOGROTATE.read_text()
    pattern = "/var/log/qc-tail/*/*.log {"
    assert text.count(pattern) == 1
    text = text.replace(pattern, f"{logs}/qc-tail/*/*.log {{")
    reload = "systemctl reload qc-tail.service >/dev/null 2>&1 || true"
    assert reload in text
    conf = tmp_path / "qc-tail.logrotate"
    conf.write_text(text.replace(reload, postrotate))
    conf.chmod(0o644)  # logrotate distrusts group- or world-writable configs
    return conf, logs / "qc-tail" / "23456789"


def _run_logrotate(*args: str) -> subprocess.CompletedProcess[str]:
    assert logrotate is not None
    return subprocess.run(
        [logrotate, *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_logrotate
def test_logrotate_debug_run_is_clean(tmp_path: Path) -> None:
    conf, project = _logrotate_setup(tmp_path, "true")
    (project / "L-0123456789abcdef.log").write_text("a line\n")
    result = _run_logrotate("-d", "-s", str(tmp_path / "state"), str(conf))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "error" not in output.lower(), output
    assert "L-0123456789abcdef.log" in output  # the glob reaches the files through the symlink


@needs_logrotate
@pytest.mark.skipif(shutil.which("gzip") is None, reason="gzip is not installed")
def test_logrotate_forced_rotation_creates_and_reloads_once(tmp_path: Path) -> None:
    marker = tmp_path / "reloads"
    conf, project = _logrotate_setup(tmp_path, f"echo reload >> {marker}")
    logs = [project / "L-a.log", project / "L-b.log"]
    for log in logs:
        log.write_text("first\n")
        log.chmod(0o640)
    state = str(tmp_path / "state")

    result = _run_logrotate("-f", "-s", state, str(conf))
    assert result.returncode == 0, result.stdout + result.stderr
    assert marker.read_text() == "reload\n"  # sharedscripts: one reload for all files
    for log in logs:
        assert log.read_text() == ""  # created afresh for the reopen ...
        assert stat.S_IMODE(log.stat().st_mode) == 0o640  # ... with create's mode
        assert log.with_name(log.name + ".1").read_text() == "first\n"  # delaycompress

    for log in logs:
        log.write_text("second\n")
    result = _run_logrotate("-f", "-s", state, str(conf))
    assert result.returncode == 0, result.stdout + result.stderr
    for log in logs:
        assert log.with_name(log.name + ".1").read_text() == "second\n"
        assert log.with_name(log.name + ".2.gz").is_file()
    assert marker.read_text() == "reload\nreload\n"

"""The API client against the emulator: TLS, clock skew, auth failures, and what it refuses to
trust."""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator

import pytest
import trustme
from structlog.testing import capture_logs

from tailer.api import QcApi
from tailer.auth import QcAuth, ServerClock
from tailer.emulator import Emulator
from tailer.emulator.faults import Fault
from tailer.errors import ApiError, AuthError, UnreachableError
from tailer.retry import RetryPolicy

from .conftest import PROJECT, TOKEN, USER_ID, run, secrets_in

QUICK = RetryPolicy(max_attempts=2, base=0.0, cap=0.0, auth_attempts=3, auth_base=0.0)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https_emu(ca: trustme.CA) -> Iterator[Emulator]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with Emulator(user_id=USER_ID, api_token=TOKEN, tls=context).start() as emu:
        emu.add_project(PROJECT, "secure")
        emu.deploy(PROJECT)
        emu.write(PROJECT, ["over TLS"])
        emu.publish()
        yield emu


def test_a_private_ca_is_trusted_through_ca_bundle(https_emu, ca, tmp_path):
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    api = QcApi(https_emu.base_url, QcAuth(USER_ID, TOKEN), policy=QUICK, ca_bundle=bundle)
    assert api.read_live(PROJECT).project_name == "secure"


def test_an_untrusted_certificate_fails_closed_with_a_clear_error(https_emu):
    assert https_emu.base_url.startswith("https://")
    api = QcApi(https_emu.base_url, QcAuth(USER_ID, TOKEN), policy=QUICK)
    with pytest.raises(ApiError, match=r"TLS verification failed .*set api\.ca_bundle"):
        api.read_live(PROJECT)
    assert https_emu.stats.requests == 0  # nothing, credentials least of all, was sent


def test_the_cli_names_the_fix_for_an_untrusted_certificate(https_emu, ca, tmp_path):
    result = run(https_emu, "tail", str(PROJECT))
    assert result.returncode == 1
    assert "TLS verification failed" in result.stderr and "api.ca_bundle" in result.stderr
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    config = tmp_path / "qc-tail.toml"
    config.write_text(f'[api]\nca_bundle = "{bundle}"\n')
    result = run(https_emu, "--config", str(config), "tail", str(PROJECT))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "over TLS\n"


@pytest.mark.parametrize("skew", [-3 * 3600.0, 3 * 3600.0])
def test_clock_skew_is_measured_warned_once_and_corrected(skew):
    with Emulator(user_id=USER_ID, api_token=TOKEN, skew=skew).start() as emu:
        emu.add_project(PROJECT, "p")
        emu.deploy(PROJECT)
        emu.write(PROJECT, [f"line {i}" for i in range(600)])
        emu.publish()
        clock = ServerClock()
        api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN, clock), policy=QUICK)
        with capture_logs() as events:
            deployment = api.read_live(PROJECT)
            api.read_logs(PROJECT, deployment.deploy_id, 0, 249)
            api.read_logs(PROJECT, deployment.deploy_id, 249, 498)
        assert emu.stats.auth_failures == 1  # the first request, signed with the local clock
    warnings = [e for e in events if e["event"] == "clock_skew"]
    assert len(warnings) == 1
    measured = warnings[0]["seconds"]  # Date has one-second resolution
    assert abs(measured - skew) <= 1
    assert warnings[0]["message"] == f"clock skew of {measured} s"
    assert abs(clock.offset - skew) <= 1


def test_skew_through_the_cli_keeps_the_output_exact():
    with Emulator(user_id=USER_ID, api_token=TOKEN, skew=-9000.0).start() as emu:
        emu.add_project(PROJECT, "p")
        deploy_id = emu.deploy(PROJECT)
        emu.write(PROJECT, [f"line {i}" for i in range(700)])
        emu.publish()
        result = run(emu, "tail", str(PROJECT), "--from-start")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == emu.published(PROJECT, deploy_id)
    assert len(re.findall(r"clock skew of -900[01] s", result.stderr)) == 1


def test_wrong_credentials_with_a_correct_clock_say_the_token_is_wrong(emu):
    emu.deploy(PROJECT)
    api = QcApi(emu.base_url, QcAuth(USER_ID, "not-the-token"), policy=QUICK)
    with pytest.raises(AuthError) as raised:
        api.read_live(PROJECT)
    message = str(raised.value)
    assert "clock agrees" in message and "token is wrong" in message
    assert "not-the-token" not in message and secrets_in(repr(raised.value)) == []


def test_netrc_and_proxy_settings_cannot_touch_the_credentials(emu, tmp_path, monkeypatch):
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login intruder password stolen\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # would fail if it were used
    emu.deploy(PROJECT)
    api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=QUICK)
    assert api.read_live(PROJECT).project_id == PROJECT
    assert emu.stats.auth_failures == 0


# -- the bare HTTP 500: a fault, or QuantConnect's old way of refusing credentials (SPEC §1) --


@pytest.fixture
def empty500_emu() -> Iterator[Emulator]:
    """An emulator that answers unsigned or wrongly signed requests with an empty HTTP 500."""
    with Emulator(user_id=USER_ID, api_token=TOKEN, auth_failure="empty500").start() as emu:
        emu.add_project(PROJECT, "p")
        emu.deploy(PROJECT)
        yield emu


def test_a_bare_500_from_authenticate_is_a_refusal_of_the_credentials(empty500_emu):
    api = QcApi(empty500_emu.base_url, QcAuth(USER_ID, "not-the-token"), policy=QUICK)

    with pytest.raises(AuthError) as raised:
        api.authenticate()

    message = str(raised.value)
    assert "refused the credentials" in message and "HTTP 500 with an empty body" in message
    assert "token is wrong" in message and secrets_in(message) == []
    assert empty500_emu.stats.auth_failures == QUICK.auth_attempts  # each freshly signed


def test_one_bare_500_from_authenticate_is_retried_freshly_signed(emu):
    emu.faults.script([Fault("empty500")], path="/authenticate")
    api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=QUICK)

    api.authenticate()

    assert emu.stats.faults_injected == 1 and emu.faults.pending == 0


def test_bare_500s_elsewhere_stay_transient_and_the_message_suggests_check(empty500_emu):
    api = QcApi(empty500_emu.base_url, QcAuth(USER_ID, "not-the-token"), policy=QUICK)

    with pytest.raises(UnreachableError) as raised:  # not AuthError: the daemon keeps polling
        api.read_live(PROJECT)

    message = str(raised.value)
    assert "giving up for now: /live/read: HTTP 500 with an empty body" in message
    assert "refused credentials" in message and "qc-tail check" in message


def test_a_bare_500_among_other_failures_does_not_blame_the_credentials(emu):
    emu.faults.script([Fault("empty500"), Fault("503")], path="/live/read")
    api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=QUICK)

    with pytest.raises(UnreachableError) as raised:
        api.read_live(PROJECT)

    assert "HTTP 503" in str(raised.value) and "qc-tail check" not in str(raised.value)


def test_a_passing_bare_500_elsewhere_is_retried(emu):
    emu.deploy(PROJECT)
    emu.faults.script([Fault("empty500")], path="/live/read")
    api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=QUICK)

    assert api.read_live(PROJECT).project_id == PROJECT
    assert emu.stats.faults_injected == 1


def test_a_list_for_one_project_holds_only_its_deployments_whatever_the_server_sends():
    """``/live/list`` documents only ``status``: a server that ignores ``projectId`` answers
    the whole account, and the client keeps the project's deployments alone."""
    with Emulator(user_id=USER_ID, api_token=TOKEN, list_ignores_project=True).start() as emu:
        for project_id in (PROJECT, PROJECT + 1):
            emu.add_project(project_id, str(project_id))
            emu.deploy(project_id)
        api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=QUICK)
        assert len(api.list_live()) == 2
        mine = api.list_live(project_id=PROJECT)
        assert [(d.project_id, d.deploy_id) for d in mine] == [
            (PROJECT, emu.deploy_ids(PROJECT)[0])
        ]

"""`qc-tail check` end to end: which credentials sign, and how a refusal is reported."""

from __future__ import annotations

from tailer.emulator import Emulator

from .conftest import PROJECT, TOKEN, USER_ID, run


def test_a_user_from_the_environment_with_the_files_token_is_a_config_error(emu, tmp_path):
    """Such a pair never matches: exit 78 naming both halves, not 77 blaming the token."""
    token_file = tmp_path / "api-token"
    token_file.write_text("the-file-users-token\n")
    token_file.chmod(0o600)
    config = tmp_path / "config.toml"
    config.write_text(f'[api]\nuser_id = 999\napi_token_file = "{token_file}"\n')
    config.chmod(0o600)

    # cli_env sets QC_USER_ID and QC_API_TOKEN to the emulator's user and token
    result = run(emu, "--config", str(config), "check")

    assert result.returncode == 78, result.stderr
    assert str(config) in result.stderr and "QC_USER_ID" in result.stderr
    assert "api.api_token_file" in result.stderr
    assert "Traceback" not in result.stderr
    assert emu.stats.requests == 0


def test_check_reports_a_bare_500_from_authenticate_as_refused_credentials():
    with Emulator(user_id=USER_ID, api_token=TOKEN, auth_failure="empty500").start() as emu:
        emu.add_project(PROJECT, "p")

        result = run(emu, "check", QC_API_TOKEN="not-the-token", timeout=120)

        assert emu.stats.auth_failures == 3  # freshly signed attempts, then no more
    assert result.returncode == 77, result.stderr
    assert "refused the credentials" in result.stderr
    assert "HTTP 500 with an empty body" in result.stderr
    assert "giving up" not in result.stderr

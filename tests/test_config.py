"""Tests for tailer.config: the TOML file of SPEC §6, the environment, and the secrets."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tailer.config import (
    ApiConfig,
    Config,
    FollowConfig,
    LokiConfig,
    MetricsConfig,
    OutputConfig,
    PollConfig,
    load_config,
)
from tailer.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
LOKI = '[output.loki]\nurl = "http://127.0.0.1:3100/loki/api/v1/push"\n'


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def refusal(path: Path | None, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env or {})
    return caught.value


# -- defaults and the example --------------------------------------------------------------------


def test_no_file_gives_the_defaults() -> None:
    config = load_config(None, {})

    assert config == Config()
    assert config.source is None
    assert config.api == ApiConfig()
    assert config.api.base_url == "https://www.quantconnect.com/api/v2"
    assert config.api.api_token is None
    assert config.follows == ()
    assert config.output.loki is None


def test_an_empty_file_gives_the_defaults_and_names_its_source(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "")

    config = load_config(path, {})

    assert dataclasses.replace(config, source=None) == Config()
    assert config.source == path


def test_the_example_loads_with_its_values() -> None:
    config = load_config(EXAMPLE, {})

    assert config.api.user_id == 123456
    assert config.api.api_token is None
    assert config.poll == PollConfig(interval=30.0, max_interval=300.0, drain=600.0)
    assert config.follows == (FollowConfig(23456789, name="mean-reversion"),)
    assert config.output.directory == Path("/var/log/qc-tail")
    assert config.output.loki is not None
    assert dict(config.output.loki.labels) == {"job": "qc-tail"}
    assert config.output.loki.timezone == "America/New_York"
    assert config.metrics == MetricsConfig(listen=("127.0.0.1", 9464), stall=120.0)
    assert config.discovery.shard == (1, 1)


@pytest.mark.parametrize(
    "key",
    [
        *("base_url", "user_id", "api_token_file", "api_token", "timeout", "ca_bundle"),
        *("max_requests_per_minute", "max_in_flight", "interval", "max_interval", "drain"),
        *("dir", "enabled", "projects", "start", "project_id", "deploy_id", "name"),
        *("stdout", "format", "directory", "url", "labels", "tenant_id", "batch_size"),
        *("timezone", "username", "password_file", "bearer_token_file", "query_url"),
        *("query_username", "query_password_file", "query_bearer_token_file"),
        *("shard", "listen", "stall"),
    ],
)
def test_the_example_documents_every_key(key: str) -> None:
    assert re.search(rf"^(# )?{key} = .*# ", EXAMPLE.read_text(), re.MULTILINE)


def test_the_example_loads_with_its_token_lines_uncommented(tmp_path: Path) -> None:
    token = write(tmp_path / "api-token", "from-the-example-file\n", mode=0o600)
    text = EXAMPLE.read_text().replace(
        '# api_token_file = "/etc/qc-tail/api-token"', f'api_token_file = "{token}"'
    )
    config = load_config(write(tmp_path / "config.toml", text), {})

    assert config.api.api_token == "from-the-example-file"


# -- wrong keys, types and values ----------------------------------------------------------------


def test_unknown_key_names_file_and_dotted_key(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[poll]\nintervall = 30\n")

    error = refusal(path)

    assert (error.path, error.key) == (str(path), "poll.intervall")
    expected = f"{path}: poll.intervall: unknown key (known here: drain, interval, max_interval)"
    assert expected == str(error)


def test_a_bad_value_reads_like_the_spec_example(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[poll]\ninterval = -1\n")

    assert f"{path}: poll.interval: must be a number > 0, got -1" == str(refusal(path))


@pytest.mark.parametrize(
    ("toml", "key", "says"),
    [
        ("[apii]", "apii", "unknown key"),
        ("api = 3", "api", "must be a table, got 3"),
        ('[api]\nbase_url = "ftp://example.com"', "api.base_url", "http:// or https://"),
        ('[api]\nbase_url = "https://"', "api.base_url", "with a host"),
        ('[api]\nbase_url = "http://[::1"', "api.base_url", "URL"),
        ('[api]\nbase_url = "http://host:99999"', "api.base_url", "URL"),
        ("[api]\nuser_id = 0", "api.user_id", "must be an integer >= 1, got 0"),
        ("[api]\nuser_id = 1.5", "api.user_id", "integer"),
        ('[api]\nuser_id = "123"', "api.user_id", 'got "123"'),
        ("[api]\ntimeout = 0", "api.timeout", "> 0"),
        ("[api]\ntimeout = true", "api.timeout", "number > 0, got true"),
        ("[api]\nmax_requests_per_minute = -1", "api.max_requests_per_minute", ">= 0"),
        ("[api]\nmax_in_flight = 65", "api.max_in_flight", "from 1 to 64, got 65"),
        ("[api]\nmax_in_flight = true", "api.max_in_flight", "got true"),
        ('[api]\nca_bundle = "missing.pem"', "api.ca_bundle", "no such file"),
        ('[api]\napi_token_file = ""', "api.api_token_file", "non-empty path"),
        ("[poll]\ninterval = nan", "poll.interval", "got nan"),
        ("[poll]\ninterval = inf", "poll.interval", "got inf"),
        ('[poll]\ninterval = "30"', "poll.interval", 'got "30"'),
        ("[poll]\ninterval = 10\nmax_interval = 5", "poll.max_interval", ">= poll.interval"),
        ("[poll]\ndrain = -0.5", "poll.drain", "must be a number >= 0, got -0.5"),
        ('[state]\ndir = ""', "state.dir", "non-empty path"),
        ("[state]\ndir = 1", "state.dir", "path"),
        ("[discovery]\nenabled = 1", "discovery.enabled", "must be true or false, got 1"),
        ("[discovery]\ninterval = 0", "discovery.interval", "> 0"),
        ("[discovery]\nprojects = 5", "discovery.projects", "array of integers"),
        ("[discovery]\nprojects = [1, -2]", "discovery.projects[1]", "got -2"),
        ('[discovery]\nstart = "beginning"', "discovery.start", '"end", "deployment", "project"'),
        ('[discovery]\nshard = "4/3"', "discovery.shard", '"K/N" with 1 <= K <= N'),
        ('[discovery]\nshard = "0/3"', "discovery.shard", 'got "0/3"'),
        ('[discovery]\nshard = "1"', "discovery.shard", '"K/N"'),
        ("[discovery]\nshard = 2", "discovery.shard", "must be a string"),
        ('[metrics]\nlisten = "9464"', "metrics.listen", '"HOST:PORT"'),
        ('[metrics]\nlisten = "127.0.0.1:70000"', "metrics.listen", "port 0 to 65535"),
        ('[metrics]\nlisten = ":9464"', "metrics.listen", '"HOST:PORT"'),
        ("[metrics]\nstall = 0", "metrics.stall", "> 0"),
        ("[metrics]\nlistne = 1", "metrics.listne", "unknown key"),
        ('[[follow]]\nname = "x"', "follow[0].project_id", "is required"),
        (
            "[[follow]]\nproject_id = 1\n[[follow]]\nproject_id = 2\n[[follow]]\nproject_id = 0",
            "follow[2].project_id",
            "must be an integer >= 1, got 0",
        ),
        ("[[follow]]\nproject_id = true", "follow[0].project_id", "integer"),
        ('[[follow]]\nproject_id = 1\ndeploy_id = "D-1"', "follow[0].deploy_id", "L-"),
        ('[[follow]]\nproject_id = 1\ndeploy_id = "L-"', "follow[0].deploy_id", "L-"),
        (f'[[follow]]\nproject_id = 1\ndeploy_id = "L-{"a" * 65}"', "follow[0].deploy_id", "L-"),
        ('[[follow]]\nproject_id = 1\ndeploy_id = "L-ab\\n"', "follow[0].deploy_id", "L-"),
        ('[[follow]]\nproject_id = 1\nname = ""', "follow[0].name", "1 to 64 printable"),
        ('[[follow]]\nproject_id = 1\nname = "a\\nb"', "follow[0].name", "printable"),
        ('[[follow]]\nproject_id = 1\nname = "a\\u0000"', "follow[0].name", "printable"),
        (f'[[follow]]\nproject_id = 1\nname = "{"x" * 65}"', "follow[0].name", "1 to 64"),
        ('[[follow]]\nproject_id = 1\nstart = "begin"', "follow[0].start", "one of"),
        ("[[follow]]\nproject_id = 1\nproject = 2", "follow[0].project", "unknown key"),
        ("[[follow]]\nproject_id = 1\n[[follow]]\nproject_id = 1", "follow[1]", "follow[0]"),
        (
            '[[follow]]\nproject_id = 1\n[[follow]]\nproject_id = 1\ndeploy_id = "L-ab"',
            "follow[1]",
            "read twice",
        ),
        (
            '[[follow]]\nproject_id = 1\ndeploy_id = "L-ab"\n[[follow]]\nproject_id = 1',
            "follow[1]",
            "read twice",
        ),
        ("follow = 3", "follow", "array of tables ([[follow]])"),
        ("follow = [1]", "follow[0]", "must be a table"),
        ("[follow]\nproject_id = 1", "follow", "array of tables"),
        ('[output]\nformat = "xml"', "output.format", 'one of "text", "json", got "xml"'),
        ('[output]\nstdout = "yes"', "output.stdout", "true or false"),
        ("[output]\ndirectory = []", "output.directory", "got an array"),
        ("[output.loki]\ntenant_id = 'a'", "output.loki.url", "is required"),
        ('[output.loki]\nurl = "127.0.0.1:3100"', "output.loki.url", "http:// or https://"),
        (LOKI + "labels = 1", "output.loki.labels", "must be a table"),
        (LOKI + 'labels = { "bad name" = "x" }', 'output.loki.labels."bad name"', "label name"),
        (LOKI + 'labels = { 9lives = "x" }', "output.loki.labels.9lives", "label name"),
        (LOKI + 'labels = { __name__ = "x" }', "output.loki.labels.__name__", "label name"),
        (LOKI + 'labels = { name = "x" }', "output.loki.labels.name", "set by qc-tail"),
        (LOKI + "labels = { job = 1 }", "output.loki.labels.job", "must be a string, got 1"),
        (LOKI + 'tenant_id = "a\\nb"', "output.loki.tenant_id", "printable"),
        (LOKI + "batch_size = 0", "output.loki.batch_size", ">= 1"),
        (LOKI + 'timezone = "Mars/Olympus"', "output.loki.timezone", "time zone"),
        (LOKI + 'timezone = "../../etc/passwd"', "output.loki.timezone", "time zone"),
        (LOKI + 'username = "u"', "output.loki.password_file", "go together"),
        (LOKI + 'password_file = "p"', "output.loki.username", "go together"),
        (LOKI + "push = true", "output.loki.push", "unknown key"),
        ('[poll]\n"a.b" = 1', 'poll."a.b"', "unknown key"),
    ],
)
def test_bad_values_name_the_dotted_key(tmp_path: Path, toml: str, key: str, says: str) -> None:
    path = write(tmp_path / "config.toml", toml + "\n")

    error = refusal(path)

    assert (error.path, error.key) == (str(path), key)
    assert str(error).startswith(f"{path}: {key}: ")
    assert says in str(error)


def test_ints_are_accepted_where_floats_are_expected(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[poll]\ninterval = 1\ndrain = 0\n")

    poll = load_config(path, {}).poll

    assert (poll.interval, poll.drain) == (1.0, 0.0)
    assert isinstance(poll.interval, float)


def test_fractional_intervals_are_allowed(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[poll]\ninterval = 0.25\nmax_interval = 0.5\n")

    assert load_config(path, {}).poll == PollConfig(0.25, 0.5, 600.0)


def test_default_max_interval_grows_with_a_long_interval(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[poll]\ninterval = 900\n")

    assert load_config(path, {}).poll.max_interval == 900.0


def test_the_same_project_may_be_followed_per_deployment(tmp_path: Path) -> None:
    """Several pinned deployments of one project (but not one pinned beside one followed
    across redeploys: both would read the pinned one while it is current)."""
    pin = '[[follow]]\nproject_id = 7\ndeploy_id = "L-{}"\n'
    text = pin.format("abc") + pin.format("def")

    follows = load_config(write(tmp_path / "config.toml", text), {}).follows

    assert follows == (FollowConfig(7, deploy_id="L-abc"), FollowConfig(7, deploy_id="L-def"))


def test_discovery_projects_are_a_tuple_without_repeats(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[discovery]\nprojects = [3, 1, 3]\n")

    assert load_config(path, {}).discovery.projects == (3, 1)


# -- files that cannot be read -------------------------------------------------------------------


def test_invalid_toml_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[poll]\ninterval = \n")

    error = refusal(path)

    assert str(error).startswith(f"{path}: invalid TOML: ")
    assert "line 2" in str(error)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"

    assert f"{path}: cannot read: No such file or directory" == str(refusal(path))


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    assert str(refusal(tmp_path)).startswith(f"{tmp_path}: cannot read: ")


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b"[poll]\n# caf\xe9\n")

    assert str(refusal(path)).startswith(f"{path}: is not UTF-8 text")


# -- relative paths ------------------------------------------------------------------------------


def test_relative_paths_count_from_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    write(etc / "token", "t0ken", mode=0o600)
    write(etc / "ca.pem", "not really a certificate")
    text = (
        '[api]\napi_token_file = "token"\nca_bundle = "ca.pem"\n'
        '[state]\ndir = "state"\n[output]\ndirectory = "../logs"\n'
    )
    write(etc / "config.toml", text)
    monkeypatch.chdir(tmp_path)  # the config is named relative to the working directory

    config = load_config(Path("etc/config.toml"), {})
    monkeypatch.chdir("/")  # and the paths stay right after a daemon's chdir

    assert config.source == etc / "config.toml"
    assert config.api.api_token == "t0ken"
    assert config.api.ca_bundle == etc / "ca.pem"
    assert config.state.dir == etc / "state"
    assert config.output.directory == etc / "../logs"
    assert config.output.directory.resolve() == (tmp_path / "logs").resolve()


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[state]\ndir = "/srv/qc-tail"\n')

    assert load_config(path, {}).state.dir == Path("/srv/qc-tail")


# -- the environment -----------------------------------------------------------------------------


def test_environment_overrides_base_url_and_user_id(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[api]\nbase_url = "https://a.example"\nuser_id = 1\n')
    env = {"QC_BASE_URL": "http://127.0.0.1:8080/api/v2", "QC_USER_ID": "42"}

    api = load_config(path, env).api

    assert (api.base_url, api.user_id) == ("http://127.0.0.1:8080/api/v2", 42)


def test_empty_environment_variables_count_as_unset() -> None:
    env = {"QC_BASE_URL": "", "QC_USER_ID": "", "QC_API_TOKEN": "", "CREDENTIALS_DIRECTORY": ""}

    assert load_config(None, env) == Config()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"QC_USER_ID": "abc"}, 'QC_USER_ID: must be an integer >= 1, got "abc"'),
        ({"QC_USER_ID": "0"}, 'QC_USER_ID: must be an integer >= 1, got "0"'),
        ({"QC_USER_ID": "1_000"}, 'QC_USER_ID: must be an integer >= 1, got "1_000"'),
        ({"QC_BASE_URL": "localhost:8080"}, "QC_BASE_URL: must be an http:// or https:// URL"),
        ({"QC_API_TOKEN": "a\nb"}, "QC_API_TOKEN: must be a single line of printable text"),
    ],
)
def test_bad_environment_variables_are_named(env: dict[str, str], expected: str) -> None:
    error = refusal(None, env)

    assert (error.path, error.key) == (None, expected.split(":")[0])
    assert str(error).startswith(expected)


SOURCES = ("credential", "token file", "environment", "config file")


@pytest.mark.parametrize("first", range(len(SOURCES) + 1))
def test_the_token_comes_from_the_first_source_present(tmp_path: Path, first: int) -> None:
    present = SOURCES[first:]
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    text = "[api]\n"
    if "credential" in present:
        write(credentials / "qc-api-token", "from-credential\n", mode=0o644)  # systemd's to guard
    if "token file" in present:
        write(tmp_path / "token", "  from-token-file\n\n", mode=0o600)
        text += 'api_token_file = "token"\n'
    if "environment" in present:
        env["QC_API_TOKEN"] = "from-environment"
    if "config file" in present:
        text += 'api_token = "from-config-file"\n'
    path = write(tmp_path / "config.toml", text, mode=0o600)

    token = load_config(path, env).api.api_token

    expected = ["from-credential", "from-token-file", "from-environment", "from-config-file"]
    assert token == (expected[first] if first < len(expected) else None)


def test_a_user_from_the_environment_and_a_token_from_the_file_are_refused(
    tmp_path: Path,
) -> None:
    """The token file wins over $QC_API_TOKEN (a service's own files first), while
    $QC_USER_ID overrides api.user_id: another user with the file's token is a pair that
    never matches, and would fail as "bad credentials". It is refused, naming both."""
    write(tmp_path / "token", "file-token\n", mode=0o600)
    text = '[api]\nuser_id = 999\napi_token_file = "token"\n'
    path = write(tmp_path / "config.toml", text, mode=0o600)

    error = refusal(path, {"QC_USER_ID": "1234", "QC_API_TOKEN": "env-token"})

    assert error.key == "QC_USER_ID"
    assert "api.user_id = 999" in str(error) and "api.api_token_file" in str(error)
    agreeing = load_config(path, {"QC_USER_ID": "999"}).api
    assert (agreeing.user_id, agreeing.api_token) == (999, "file-token")


def test_the_environments_pair_replaces_an_inline_token_and_its_user(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[api]\nuser_id = 999\napi_token = "t"\n', mode=0o600)

    api = load_config(path, {"QC_USER_ID": "1234", "QC_API_TOKEN": "env-token"}).api

    assert (api.user_id, api.api_token) == (1234, "env-token")


def test_an_empty_token_file_is_an_error_naming_it(tmp_path: Path) -> None:
    write(tmp_path / "token", " \n", mode=0o600)
    path = write(tmp_path / "config.toml", '[api]\napi_token_file = "token"\n')

    assert str(refusal(path)).startswith(f"{tmp_path / 'token'}: is empty")


def test_a_missing_token_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[api]\napi_token_file = "token"\n')

    error = str(refusal(path))

    assert error.startswith(f"{tmp_path / 'token'}: cannot read (named by api.api_token_file)")


def test_a_token_file_of_two_lines_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "token", "one\ntwo\n", mode=0o600)
    path = write(tmp_path / "config.toml", '[api]\napi_token_file = "token"\n')

    assert "single line" in str(refusal(path))


# -- secrets: permissions and repr ---------------------------------------------------------------

SECRET_KEYS = {
    "api_token_file": '[api]\napi_token_file = "secret"\n',
    "password_file": LOKI + 'username = "qc"\npassword_file = "secret"\n',
    "bearer_token_file": LOKI + 'bearer_token_file = "secret"\n',
    "query_password_file": LOKI + 'query_username = "qc"\nquery_password_file = "secret"\n',
    "query_bearer_token_file": LOKI + 'query_bearer_token_file = "secret"\n',
}


@pytest.mark.parametrize("key", SECRET_KEYS)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o710])
def test_a_secret_file_open_to_others_is_refused(tmp_path: Path, key: str, mode: int) -> None:
    secret = write(tmp_path / "secret", "s3cret", mode=mode)
    path = write(tmp_path / "config.toml", SECRET_KEYS[key])

    expected = f"{secret}: permissions {mode:04o} are too open; it holds a secret: chmod 600 it"
    assert expected == str(refusal(path))


@pytest.mark.parametrize("key", SECRET_KEYS)
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_secret_file_is_read(tmp_path: Path, key: str, mode: int) -> None:
    write(tmp_path / "secret", "s3cret\n", mode=mode)
    path = write(tmp_path / "config.toml", SECRET_KEYS[key])

    config = load_config(path, {})

    loki = config.output.loki or LokiConfig("")
    secrets = (loki.password, loki.bearer_token, loki.query_password, loki.query_bearer_token)
    assert "s3cret" in (config.api.api_token, *secrets)
    assert "s3cret" not in repr(config)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_secret_file_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    secret = write(tmp_path / "secret", "s3cret", mode=0o600)
    os.chown(secret, 12345, -1)
    path = write(tmp_path / "config.toml", SECRET_KEYS["api_token_file"])

    assert str(refusal(path)).startswith(f"{secret}: is owned by uid 12345; it holds a secret")


def test_a_config_holding_the_token_must_be_private(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[api]\napi_token = "s3cret"\n', mode=0o644)

    expected = f"{path}: permissions 0644 are too open; it holds a secret: chmod 600 it"
    assert expected == str(refusal(path))
    path.chmod(0o600)
    assert load_config(path, {}).api.api_token == "s3cret"


def test_a_config_holding_the_token_is_refused_even_when_another_source_wins(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "config.toml", '[api]\napi_token = "s3cret"\n', mode=0o604)

    assert "are too open" in str(refusal(path, {"QC_API_TOKEN": "from-environment"}))


def test_a_config_without_secrets_may_be_world_readable(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", "[api]\nuser_id = 5\n", mode=0o644)

    assert load_config(path, {}).api.user_id == 5


def test_secrets_never_show_in_repr_or_messages(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[api]\napi_token = "s3cret\\n"\n', mode=0o600)
    assert "s3cret" not in str(refusal(path))

    config = load_config(None, {"QC_API_TOKEN": "s3cret"})
    assert config.api.api_token == "s3cret"
    assert "s3cret" not in repr(config)
    assert "s3cret" not in repr(LokiConfig("http://h", password="s3cret", bearer_token="s3cret"))


@pytest.mark.parametrize(
    ("url", "query_url"),
    [
        ("http://127.0.0.1:3100/loki/api/v1/push", "http://127.0.0.1:3100/loki/api/v1/query_range"),
        ("https://logs.example/loki/api/v1/push/", "https://logs.example/loki/api/v1/query_range"),
        ("https://logs.example/custom/ingest", ""),  # nothing to derive: no queries
    ],
)
def test_the_query_url_follows_from_the_push_url(url: str, query_url: str) -> None:
    assert LokiConfig(url).query_url == query_url


def test_queries_take_the_push_credentials_unless_given_their_own(tmp_path: Path) -> None:
    write(tmp_path / "push", "writer", mode=0o600)
    write(tmp_path / "read", "reader", mode=0o600)
    same = LOKI + 'bearer_token_file = "push"\n'
    own = same + 'query_url = "http://q:3100/loki/api/v1/query_range"\n'
    own += 'query_bearer_token_file = "read"\n'

    shared = load_config(write(tmp_path / "same.toml", same), {}).output.loki
    separate = load_config(write(tmp_path / "own.toml", own), {}).output.loki

    assert shared is not None and separate is not None
    assert (shared.query_bearer_token, separate.query_bearer_token) == ("writer", "reader")
    assert separate.query_url == "http://q:3100/loki/api/v1/query_range"
    assert "reader" not in repr(separate)


def test_query_username_and_password_go_together(tmp_path: Path) -> None:
    error = refusal(write(tmp_path / "config.toml", LOKI + 'query_username = "u"\n'))

    assert error.key == "output.loki.query_password_file"
    assert "go together" in str(error)


def test_basic_auth_and_bearer_token_exclude_each_other(tmp_path: Path) -> None:
    write(tmp_path / "p", "pw", mode=0o600)
    text = LOKI + 'username = "u"\npassword_file = "p"\nbearer_token_file = "p"\n'

    error = refusal(write(tmp_path / "config.toml", text))

    assert error.key == "output.loki.bearer_token_file"


# -- the objects ---------------------------------------------------------------------------------


def test_config_objects_are_frozen_and_hashable() -> None:
    config = load_config(EXAMPLE, {})

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.poll.interval = 1.0  # type: ignore[misc]
    assert hash(config) == hash(load_config(EXAMPLE, {}))


def test_loki_labels_are_an_immutable_hashable_mapping() -> None:
    loki = LokiConfig("http://h", labels={"job": "qc-tail"})

    assert loki.labels == {"job": "qc-tail"}
    with pytest.raises(TypeError):
        loki.labels["job"] = "other"  # type: ignore[index]
    same = LokiConfig("http://h", labels={"job": "qc-tail"})
    assert hash(OutputConfig(loki=loki)) == hash(OutputConfig(loki=same))


# -- never a traceback ---------------------------------------------------------------------------
# Documents are built key by key from values that are mostly right for the key (so the fuzz
# gets past the first check), sometimes anything at all, and now and then an unknown key.

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1), st.floats(), st.booleans(), TEXT, st.just("secret")
)
ANYTHING = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
SMALL_INTS = st.integers(-1, 100)
NUMBERS = st.integers(-1, 1000) | st.floats(-1, 1000)


def _words(*words: str) -> st.SearchStrategy[object]:
    return st.sampled_from(words)


def _mostly(
    usual: st.SearchStrategy[object], *rare: st.SearchStrategy[object], odds: int = 4
) -> st.SearchStrategy[object]:
    """``usual`` ``odds`` times as often as each of ``rare`` (one_of alone is not uniform)."""
    return st.sampled_from([usual] * odds + list(rare)).flatmap(lambda strategy: strategy)


LIKELY: dict[str, st.SearchStrategy[object]] = {
    "base_url": _words("https://h/api", "http://127.0.0.1:1/v2", "ftp://h", "http://"),
    "url": _words("http://127.0.0.1:3100/loki/api/v1/push", "https://[::1]:3100/x", "loki"),
    "user_id": SMALL_INTS,
    "project_id": SMALL_INTS,
    "max_requests_per_minute": SMALL_INTS,
    "max_in_flight": SMALL_INTS,
    "batch_size": SMALL_INTS,
    "timeout": NUMBERS,
    "interval": NUMBERS,
    "max_interval": NUMBERS,
    "drain": NUMBERS,
    "enabled": st.booleans(),
    "stdout": st.booleans(),
    "projects": st.lists(SMALL_INTS, max_size=3),
    "start": _words("end", "deployment", "project", "tail"),
    "format": _words("text", "json", "xml"),
    "deploy_id": _words("L-abc123", "L-", "L-a\n", "D-1"),
    "name": TEXT,
    "tenant_id": TEXT,
    "username": TEXT,
    "api_token": TEXT,
    "timezone": _words("UTC", "America/New_York", "Mars/Olympus", "../etc", ""),
    "labels": st.dictionaries(_words("job", "env", "9x", "__x", "a b"), TEXT | SMALL_INTS),
    "dir": _words("state", "/tmp/qc", ""),
    "directory": _words("logs", "/tmp/qc", ""),
    **dict.fromkeys(
        ["api_token_file", "password_file", "bearer_token_file", "ca_bundle"],
        _words("secret", "open", "missing", "."),
    ),
}


def _table(keys: list[str], **nested: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    entries = {key: _mostly(LIKELY.get(key, ANYTHING), ANYTHING) for key in keys} | nested
    good = st.fixed_dictionaries({}, optional=entries)
    odd = st.fixed_dictionaries({"unknown": ANYTHING}, optional=entries)
    return _mostly(good, odd, ANYTHING, odds=10)


DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "api": _table([*ApiConfig.__dataclass_fields__, "api_token_file"]),
        "poll": _table(["interval", "max_interval", "drain"]),
        "state": _table(["dir"]),
        "discovery": _table(["enabled", "interval", "projects", "start"]),
        "follow": st.lists(_table(["project_id", "deploy_id", "name", "start"]), max_size=3),
        "output": _table(
            ["stdout", "format", "directory"],
            loki=_table(
                [
                    *LokiConfig.__dataclass_fields__,
                    *("password_file", "bearer_token_file"),
                    *("query_password_file", "query_bearer_token_file"),
                ]
            ),
        ),
    },
)
ENVIRONMENTS = st.fixed_dictionaries(
    {},
    optional={
        "QC_BASE_URL": _mostly(_words("https://h/api", "http://127.0.0.1:1", "h"), TEXT),
        "QC_USER_ID": _mostly(_words("12", "0", "x"), TEXT),
        "QC_API_TOKEN": _mostly(_words("t0ken", "", "a\nb"), TEXT),
        "CREDENTIALS_DIRECTORY": _mostly(_words(".", "/nonexistent"), TEXT),
    },
)


def to_toml(document: dict[str, object]) -> str:
    """A tiny TOML writer: every table inline, every key quoted."""
    return "".join(f"{_toml(key)} = {_toml(value)}\n" for key, value in document.items())


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = (f"\\u{ord(c):04x}" if c < " " or c in '"\\\x7f' else c for c in value)
        return '"' + "".join(escaped) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz")
    write(directory / "secret", "s3cret", mode=0o600)
    write(directory / "open", "s3cret", mode=0o644)
    return directory


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS, env=ENVIRONMENTS)
def test_any_document_gives_a_config_or_a_config_error(
    fuzz_dir: Path, document: dict[str, object], env: dict[str, str]
) -> None:
    text = to_toml(document)
    tomllib.loads(text)  # the writer itself makes valid TOML
    path = write(fuzz_dir / "config.toml", text, mode=0o600)

    try:
        config = load_config(path, env)
    except ConfigError as error:
        assert str(error)
    else:
        assert isinstance(config, Config)
        hash(config)


TOMLISH = st.text(st.sampled_from(list("[]{}=.,\"'#\n _-:0123456789abcdefinapoltrusx")))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=200) | TOMLISH.map(str.encode))
def test_any_bytes_give_a_config_or_a_config_error(fuzz_dir: Path, data: bytes) -> None:
    path = fuzz_dir / "bytes.toml"
    path.write_bytes(data)

    try:
        load_config(path, {})
    except ConfigError as error:
        assert str(error)


# -- [metrics] and shards --------------------------------------------------------------------


def test_metrics_are_off_unless_a_listen_address_is_given() -> None:
    assert load_config(None, {}).metrics.listen is None


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_the_listen_address_is_host_and_port(tmp_path: Path, listen: str, address) -> None:
    path = write(tmp_path / "config.toml", f'[metrics]\nlisten = "{listen}"\n')

    assert load_config(path, {}).metrics.listen == address


def test_the_environment_turns_metrics_on_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[metrics]\nlisten = "127.0.0.1:1"\n')

    env = {"QC_TAIL_METRICS_LISTEN": "127.0.0.1:9464"}
    assert load_config(path, env).metrics.listen == ("127.0.0.1", 9464)
    assert load_config(path, {"QC_TAIL_METRICS_LISTEN": ""}).metrics.listen == ("127.0.0.1", 1)
    error = refusal(path, {"QC_TAIL_METRICS_LISTEN": "nowhere"})
    assert error.key == "QC_TAIL_METRICS_LISTEN"


def test_a_shard_is_k_of_n(tmp_path: Path) -> None:
    path = write(tmp_path / "config.toml", '[discovery]\nshard = "2/3"\n')

    assert load_config(path, {}).discovery.shard == (2, 3)

"""The CLI's promises about itself: every exit code it can return is documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from tailer import cli, errors

README = Path(__file__).resolve().parents[1] / "README.md"
COMMANDS = ["tail", "run", "list", "check", "demo", "emulator"]


def listed_in_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[int]:
    assert cli.main([*argv, "--help"]) == 0
    epilog = capsys.readouterr().out.partition("\nexit codes:\n")[2]
    return [int(code) for code in re.findall(r"^  (\d+) ", epilog, re.MULTILINE)]


def test_the_main_help_lists_every_exit_code(capsys):
    assert listed_in_help([], capsys) == sorted(cli.EXIT_CODES)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_commands_help_lists_its_exit_codes(command, capsys):
    codes = listed_in_help([command], capsys)
    assert {0, 2, 70} <= set(codes) <= set(cli.EXIT_CODES)


def test_the_readme_lists_every_exit_code():
    section = README.read_text().partition("\n## Exit codes\n")[2].partition("\n## ")[0]
    documented = [int(code) for code in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)]
    assert documented == sorted(cli.EXIT_CODES)


def test_every_error_carries_a_documented_exit_code():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)]
    codes = {c.exit_code for c in classes if issubclass(c, errors.QcTailError)}
    constants = {v for k, v in vars(errors).items() if k.startswith("EX_")}
    constants |= {v for k, v in vars(cli).items() if k.startswith("EX_")}
    assert codes | constants <= set(cli.EXIT_CODES)

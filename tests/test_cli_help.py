"""``realtime-fsm --help`` and every command's ``--help`` read as plain words for a newcomer.

The help texts are printed in a terminal: no reStructuredText (double backticks, ``:class:``
roles) may leak into them from docstrings, and each says what the command does with an example.
The commands are read from the top-level help, so a command added later is checked too.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from realtime_fsm.cli import main

ROOT = Path(__file__).resolve().parents[1]
#: Markup of docstrings that means nothing in a terminal.
RST = re.compile(r"``|:(class|func|meth|mod|attr|data|exc|obj|ref|doc):`")


def help_text(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.strip(), args
    return out


def commands(capsys: pytest.CaptureFixture[str]) -> list[str]:
    usage = help_text(capsys)
    match = re.search(r"\{([a-z,-]+)\}", usage)
    assert match is not None, usage
    return match.group(1).split(",")


def test_every_help_is_plain_words_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    names = commands(capsys)
    assert {"demo", "replay", "soak"} <= set(names)
    for args in [(), *((name,) for name in names)]:
        text = help_text(capsys, *args)
        assert RST.search(text) is None, (args, RST.search(text))
        assert "example" in text, args  # an example of use, not only a list of options
    top = help_text(capsys)
    for name in names:  # each command is explained in a line of the top-level help
        assert re.search(rf"^\s+{name}\s+\S", top, re.MULTILINE), name


def test_every_option_says_what_it_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """No option is listed bare: each has a line of help (or is hidden on purpose)."""
    seen: list[argparse.ArgumentParser] = []

    def capture(self: argparse.ArgumentParser, *_args: object, **_kw: object) -> None:
        seen.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        main(["demo"])
    (top,) = seen
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    assert {"demo", "replay", "soak", "serve"} <= set(commands.choices)
    for name, parser in commands.choices.items():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue
            assert action.help, (name, action.option_strings or action.dest)
            assert RST.search(action.help) is None, (name, action.help)


def test_replay_help_explains_each_rule(capsys: pytest.CaptureFixture[str]) -> None:
    from realtime_fsm.trace_rules import RULE_MEANINGS

    text = " ".join(help_text(capsys, "replay").split())
    for rule, meaning in RULE_MEANINGS.items():
        assert f"{rule} {meaning}" in text, rule


def test_the_installed_entry_point_prints_the_same_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "realtime_fsm", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "realtime-fsm demo" in result.stdout and RST.search(result.stdout) is None


def test_version_is_printed_and_matches_the_changelog(capsys: pytest.CaptureFixture[str]) -> None:
    from realtime_fsm import __version__

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"realtime-fsm {__version__}\n"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    released = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog, re.MULTILINE)
    if __version__ in released:
        assert released[0] == __version__, "the newest release in CHANGELOG.md is not this one"
    else:  # not released yet: the Unreleased section names the version it will be
        unreleased = changelog.split("## [Unreleased]", 1)[1].split("\n## ", 1)[0]
        assert __version__ in unreleased, "CHANGELOG.md does not name this version"

"""The README documents every command, and every command's help has an example."""

from __future__ import annotations

import click
import pytest

import matcher
from matcher.cli import main
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "matcher") -> list[tuple[str, click.Command]]:
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        full = f"{prefix} {name}"
        found.append((full, command))
        if isinstance(command, click.Group):
            found += _commands(command, full)
    return found


COMMANDS = _commands(main)


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_is_in_the_readme_with_an_example(name: str, command: click.Command) -> None:
    assert f"`{name}" in README or f"\n{name} " in README or f"$ {name}" in README, name
    assert "Example" in (command.help or ""), f"{name} --help has no example"


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_option_is_in_the_readme(name: str, command: click.Command) -> None:
    for param in command.params:
        if isinstance(param, click.Option):
            longest = max(param.opts, key=len)
            assert longest in README, f"{name} {longest} is not documented in README.md"


def test_public_surface_is_what_was_meant() -> None:
    assert set(matcher.__all__) >= {"Hash", "SignalType", "SIGNALS", "MatcherError", "PDQ"}
    for name in matcher.__all__:
        assert hasattr(matcher, name), name


def test_make_targets_are_in_the_readme() -> None:
    for target in ("make run", "make test"):
        assert target in README

"""The command line sets up only the command it is given (the others cost
every command 10 ms); what it parses, and what it says, stay the same."""

from __future__ import annotations

import argparse

import pytest

from pkgdepot.cli import build_parser, main

#: one command line of each command, options included
LINES = [
    ["serve", "--listen", "127.0.0.1:3142", "--data-dir", "d", "--log-format", "json"],
    ["check-config", "--config", "c.toml"],
    ["snapshot", "list", "deb", "--json"],
    ["snapshot", "diff", "deb", "20260101T000000Z", "latest", "--json"],
    ["snapshot", "prune", "--older-than", "7", "--keep-last", "3"],
    ["mirror", "sync", "deb", "rpm", "--in-process"],
    ["build", "tree/debian/12/amd64", "--set", "base", "--format", "tar", "--resolve-only"],
    ["signing-key", "--data-dir", "d"],
    ["repair-catalog", "--verify-blobs"],
    ["gc", "--grace", "10"],
    ["verify", "--repair"],
    ["import", "old-cache"],
    ["client-config", "apt", "--depot", "http://depot:3142", "--install"],
    ["config-keys"],
    ["-v", "-v", "mirror", "sync"],
]


def _parsed(parser: argparse.ArgumentParser, line: list[str]) -> dict[str, object]:
    """The namespace, with the command's function by name (the operator
    commands' functions are made anew by each parser)."""
    args = vars(parser.parse_args(line))
    func = args.pop("func")
    cells = [c.cell_contents for c in func.__closure__ or ()]
    args["func"] = (func.__qualname__, [getattr(c, "__qualname__", c) for c in cells
                                        if callable(c)])
    return args


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


@pytest.mark.parametrize("line", LINES, ids=lambda line: " ".join(line[:3]))
def test_a_command_parses_alike_with_only_its_own_parser(line: list[str]) -> None:
    command = next(w for w in line if not w.startswith("-"))
    alone = build_parser(command)
    assert _commands(alone) == [command]
    assert _parsed(alone, line) == _parsed(build_parser(), line)


def test_without_a_known_command_every_command_is_set_up(
        capsys: pytest.CaptureFixture[str]) -> None:
    everything = _commands(build_parser())
    assert _commands(build_parser("no-such-command")) == everything
    assert {"serve", "mirror", "snapshot", "gc", "client-config", "config-keys"} <= set(everything)
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in everything)
    # a mistyped command is told which ones there are
    with pytest.raises(SystemExit) as e:
        main(["mirorr", "sync"])
    assert e.value.code == 2
    assert "invalid choice: 'mirorr'" in capsys.readouterr().err

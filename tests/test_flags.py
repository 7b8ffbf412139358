"""Flags mean the same in every command, and a command's usage error shows its usage."""

from __future__ import annotations

import pytest

from depthaccel.cli import COMMANDS, build_parser, main


def test_every_command_has_quiet_and_no_progress():
    commands = build_parser().parse_args(["demo"])._commands
    for name in COMMANDS:
        options = {o for a in commands[name]._actions for o in a.option_strings}
        assert {"--quiet", "-q", "--no-progress"} <= options, name


@pytest.mark.parametrize("command", ["reproduce all", "compare --data x.csv", "demo", "data where"])
def test_an_unknown_option_prints_the_commands_usage(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*command.split(), "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    name = command.split()[0]
    assert err.startswith(f"usage: depthaccel {name} ") and "unrecognized arguments: --bogus" in err


def test_demo_accepts_both_flags(monkeypatch):
    from depthaccel.commands import demo

    seen = []
    monkeypatch.setattr(demo, "run_demo", lambda cfg, quiet: seen.append(quiet) or 1 / 0)
    for flag in ("--quiet", "--no-progress"):
        with pytest.raises(ZeroDivisionError):
            main(["demo", flag, "--steps", "2"])
    assert seen == [True, True]

"""The `clinical-t5x` dispatcher: every command resolves, unknown ones fail with usage."""
import importlib
import inspect
import subprocess
import sys

import pytest

from clinical_t5x import cli


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_resolves_to_a_main_taking_argv(name):
    target, doc = cli.COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    assert callable(func) and doc
    assert list(inspect.signature(func).parameters)[:1] == ["argv"], target


def test_unknown_command_exits_2_with_usage(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err
    for name in cli.COMMANDS:
        assert f"  {name}" in err


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_help_lists_every_command(argv, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: clinical-t5x COMMAND")
    assert all(f"  {name}" in out for name in cli.COMMANDS)


def test_a_command_gets_only_its_own_arguments(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "probe", ("builtins:len", "test only"))
    assert cli.main(["probe", "--x", "1", "y"]) == 3  # len(argv) of the command's own argv


def test_console_script_help_imports_nothing_heavy():
    code = ("import sys; from clinical_t5x import cli; cli.main(['--help']); "
            "print(sorted(m for m in ('tensorflow', 'jax', 'seqio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert out.strip().endswith("[]")

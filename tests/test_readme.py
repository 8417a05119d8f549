"""Every command the README shows is checked: entry-point commands compose and pass the config
checks (the demo and `make test` themselves run in CI; GPU and cluster commands cannot run here),
and CLI commands parse."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from crossmodal.cli import _parser
from crossmodal.config.checks import check_targets
from crossmodal.run import _compose, preflight

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def test_readme_shows_the_setup_commands_first():
    commands = _commands()
    assert commands[:3] == ["make install", "make demo", "make test"]


@pytest.mark.parametrize("command", [c for c in _commands() if c.startswith("python -m crossmodal.run")])
def test_entry_point_commands_compose(command):
    argv = shlex.split(command)[3:]
    if "--help" in argv:
        return
    checked = preflight(argv + (["--cfg", "job"] if "--cfg" not in argv else []))
    overrides = [a for a in checked if "=" in a and not a.startswith(("-", "hydra"))]
    check_targets(_compose(overrides, []))  # data/model keys against the classes they configure


@pytest.mark.parametrize("command", [c for c in _commands() if c.startswith("crossmodal ")])
def test_cli_commands_parse(command):
    args = _parser().parse_args(shlex.split(command)[1:])
    assert args.command in {"predict", "export", "run"}

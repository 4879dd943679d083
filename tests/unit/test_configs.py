"""Every YAML under configs/ (recursively) is loaded and validated against the job it names.

Each config file begins with the exact command that runs it, e.g.
``# lantern-batch distill classifier --config configs/demo_distill_classifier.yaml``;
the test runs that command with ``--dry-run`` through the real CLI entry point.
"""

import re
import shlex
from pathlib import Path

import pytest

from lantern_batch.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def _command_line(path: Path) -> list[str]:
    for line in path.read_text().splitlines():
        m = re.match(r"#\s*(lantern-batch\s.*)$", line.strip())
        if m:
            return shlex.split(m.group(1))[1:]
    raise AssertionError(f"{path} does not begin with a '# lantern-batch ...' command comment")


def test_there_are_configs():
    assert CONFIGS, "configs/ holds no YAML"


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_config_loads_via_its_command(path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = _command_line(path)
    assert argv[0] in COMMANDS, f"{path}: unknown command {argv[0]}"
    assert "--config" in argv and Path(argv[argv.index("--config") + 1]) == path.relative_to(ROOT)
    assert main([*argv, "--dry-run"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("# ")

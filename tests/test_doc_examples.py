"""The `adjust generate` examples on shipped models in the README and the CLI's --help run as written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from adjust.cli import EPILOGS, main
from adjust.checkpoint import ASSETS

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {p.name for p in (ASSETS / "models").iterdir() if p.is_dir()}


def _examples() -> list[str]:
    text = (ROOT / "README.md").read_text() + "\n" + "\n".join(EPILOGS.values())
    lines = {m.group(1).split("#")[0].strip() for m in re.finditer(r"^\s*(adjust generate .+)$", text, re.M)}
    return sorted(line for line in lines if shlex.split(line)[shlex.split(line).index("--model") + 1] in SHIPPED)


def test_there_are_examples_to_run() -> None:
    assert len(_examples()) >= 3


@pytest.mark.parametrize("line", _examples())
def test_generate_example_runs(line: str, capsys) -> None:
    main(shlex.split(line)[1:] + ["--seed", "0"])
    assert capsys.readouterr().out.strip()

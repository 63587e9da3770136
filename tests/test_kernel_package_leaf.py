"""The kernel package stays a leaf: nothing in adjust_kernels/ imports adjust/ (developers' guide).

Two checks: a scan of every adjust_kernels source file's syntax tree for an import of ``adjust``
(top level, inside functions, or through ``importlib.import_module`` / ``__import__`` with a literal
name), and a fresh interpreter that imports every adjust_kernels module with ``adjust`` made
unimportable. The scanner is itself tested on sources that break the rule, so it cannot pass by
finding nothing.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import adjust_kernels

PACKAGE_DIR = Path(adjust_kernels.__file__).parent
SOURCES = sorted(PACKAGE_DIR.rglob("*.py"))


def _is_adjust(name: str | None) -> bool:
    return name is not None and (name == "adjust" or name.startswith("adjust."))


def adjust_imports(source: str) -> list[int]:
    """Line numbers of every import of ``adjust`` or ``adjust.*`` in ``source``, at any depth."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(_is_adjust(a.name) for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _is_adjust(node.module):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            f = node.func
            called = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if called in ("import_module", "__import__") and _is_adjust(node.args[0].value):
                lines.append(node.lineno)
    return sorted(lines)


@pytest.mark.parametrize("source", [
    "import adjust",
    "import torch, adjust.models.layers as layers",
    "from adjust import generate",
    "from adjust.unmasking import filter_logits",
    "def f():\n    from adjust.candidates import kept_linear\n    return kept_linear",
    "class C:\n    def m(self):\n        import adjust.models\n",
    "import importlib\nmod = importlib.import_module('adjust.unmasking')",
    "def f():\n    return __import__('adjust')",
])
def test_scanner_finds_an_import_of_adjust(source: str) -> None:
    assert adjust_imports(source), source


@pytest.mark.parametrize("source", [
    "import adjust_kernels.rope",
    "from adjust_kernels.rotary import apply_rope",
    "from . import rope",
    "import importlib\n_C = importlib.import_module('adjust_kernels._C')",
    "x = 'from adjust import generate'  # a string, not an import",
])
def test_scanner_accepts_what_is_not_an_import_of_adjust(source: str) -> None:
    assert adjust_imports(source) == [], source


def test_no_kernel_source_imports_adjust() -> None:
    assert len(SOURCES) > 5, f"found only {SOURCES} under {PACKAGE_DIR}"
    found = {str(p.relative_to(PACKAGE_DIR.parent)): adjust_imports(p.read_text()) for p in SOURCES}
    bad = {path: lines for path, lines in found.items() if lines}
    assert not bad, f"adjust_kernels must not import adjust (file: lines): {bad}"


_IMPORT_ALL_WITHOUT_ADJUST = textwrap.dedent("""
    import importlib, importlib.abc, sys

    class BlockAdjust(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "adjust" or name.startswith("adjust."):
                raise ModuleNotFoundError(f"blocked: {name}", name=name)
            return None

    sys.meta_path.insert(0, BlockAdjust())
    try:
        import adjust
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the blocker did not block adjust")
    names = sys.argv[1:]
    for name in names:
        importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m == "adjust" or m.startswith("adjust."))
    if leaked:
        raise SystemExit(f"adjust modules were imported: {leaked}")
    print(" ".join(names))
""")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_every_kernel_module_imports_without_adjust() -> None:
    # A fresh interpreter (this one has imported adjust already); it inherits TRITON_INTERPRET from conftest.
    names = [_module_name(p) for p in SOURCES]
    run = subprocess.run([sys.executable, "-c", _IMPORT_ALL_WITHOUT_ADJUST, *names], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.split() == names

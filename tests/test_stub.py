"""The _core.pyi stub names exactly what the compiled module exports."""
from __future__ import annotations

import ast
from pathlib import Path

from stemroi import _core

STUB = Path(__file__).resolve().parents[1] / "python" / "stemroi" / "_core.pyi"


def test_stub_matches_the_compiled_module():
    tree = ast.parse(STUB.read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    public = {n for n in dir(_core) if not n.startswith("_")} | {"__version__"}
    assert sorted(names - public) == [], "in the stub but not in stemroi._core"
    assert sorted(public - names) == [], "in stemroi._core but not in the stub"

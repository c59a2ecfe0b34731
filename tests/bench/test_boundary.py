"""The benchmarks stay out of the library: apa.bench imports the library, no library module imports apa.bench (`apa
bench` reaches it through apa.cli's table of command modules)."""

import ast
from pathlib import Path

import pytest

import apa

pytestmark = pytest.mark.slow  # end to end: `pytest -m "not slow"` leaves this module out

ROOT = Path(apa.__file__).parent


def imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def test_no_library_module_imports_the_benchmarks():
    library = [p for p in ROOT.rglob("*.py") if ROOT / "bench" not in p.parents]
    assert any(p.parent.name == "training" for p in library)  # the walk found the library
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p)
                                                  if m == "apa.bench" or m.startswith("apa.bench."))
                 for p in library}
    assert {p: m for p, m in offenders.items() if m} == {}

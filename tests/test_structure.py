"""The package's shape, held: each folder a layer that imports only from layers below it (no circles), no module
over 400 lines, each run-folder file name spelled in one module, every file write in a known, atomic place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "apa"
# Lowest first; a module may import from its own layer and the layers before it.
LAYERS = [
    ("foundations", r"apa|apa\.__init__|apa\.console|apa\.constants|apa\.errors|apa\.offline|apa\.versions"),
    ("data, metrics, run folders",
     r"apa\.data(\..*)?|apa\.metrics|apa\.uncertainty|apa\.distributed|apa\.run_folder(\..*)?"),
    ("the checkpoint", r"apa\.checkpoint(\..*)?"),
    ("config schema", r"apa\.config|apa\.command_line"),
    ("examples", r"apa\.sft(\..*)?"),
    ("training and evaluation", r"apa\.training(\..*)?|apa\.evaluation(\..*)?"),
    ("reporting", r"apa\.reporting(\..*)?"),
    ("entry points",
     r"apa\.serve(\..*)?|apa\.publish(\..*)?|apa\.bench(\..*)?|apa\.callbacks|apa\.cli|apa\.__main__"),
]
MAX_LINES = 400
# file name -> the one module that spells it (as a string of its own, docstrings aside)
SPELLED_ONCE = {"training_config.json": "apa.run_folder.layout", "metrics.json": "apa.run_folder.layout",
                "predictions.jsonl": "apa.run_folder.layout", "fingerprint.json": "apa.run_folder.layout"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path) -> set[str]:
    """apa modules `path` imports, at the top or inside functions (a lazy import is an import all the same)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "apa":
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from apa.data import records`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "apa")
    return found


def _layer(module: str) -> int:
    matches = [i for i, (_, pattern) in enumerate(LAYERS) if re.fullmatch(pattern, module)]
    assert len(matches) == 1, f"{module} belongs to {len(matches)} layers: place it in LAYERS"
    return matches[0]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_every_module_belongs_to_one_layer():
    for module in _modules():
        _layer(module)


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    upward = [f"{a} ({LAYERS[_layer(a)][0]}) imports {b} ({LAYERS[_layer(b)][0]})"
              for a, targets in _graph().items() for b in sorted(targets) if _layer(b) > _layer(a)]
    assert not upward, "\n".join(upward)


def test_there_is_no_import_circle():
    graph, state, circles = _graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join([*path[path.index(nxt):], nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "\n".join(circles)


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("name", sorted(SPELLED_ONCE))
def test_each_run_folder_file_name_is_spelled_in_one_module(name):
    spelling = re.compile(rf"(^|[/\s`'\"]){re.escape(name)}($|[\s`'\"])")
    spelled = sorted(module for module, path in _modules().items()
                     if any(spelling.search(text) for text in _string_constants(path)))
    assert spelled == [SPELLED_ONCE[name]]


# Where files are written, and why each is safe. Everything a run folder holds goes through
# apa.run_folder.write_atomic (or write_json); these are the other writers, each atomic in its own way.
WRITERS = {
    "apa.run_folder.layout": "write_atomic itself: a temporary name, then os.replace",
    "apa.run_folder.check": "the .hydra record: a temporary folder, then os.replace",
    "apa.run_folder.lock": "the lock file (fcntl), removed on release",
    "apa.evaluation.predictions": "predictions.jsonl: appended batch by batch with fsync; a torn last line is cut off",
    "apa.checkpoint.tiny": "generated miniatures: a temporary folder, then renamed into place",
    "apa.checkpoint.full_size": "the full-size random checkpoint: a temporary folder, then renamed into place",
    "apa.checkpoint.processor": "save_pretrained into a checkpoint folder the trainer renames into place when complete",
    "apa.data.hf_sources": "decoded hub audio: a per-process temporary name, then os.replace",
    "apa.config": "the cached SFTConfig field list: a temporary name, then os.replace",
    "apa.bench.cases": "results.jsonl: one line per finished case, appended, so that a deadline kill keeps them",
    "apa.serve.batch": "apa predict --out: a new file (never overwritten), appended batch by batch with fsync; "
                       "--resume cuts off a torn last line",
}


def _writes(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            mode = next((a.value for a in node.args[:1] if isinstance(a, ast.Constant)), None) if name == "open" \
                else None
            if name in ("write_text", "write_bytes") or (name == "open" and mode and set(mode) & set("wax")):
                lines.append(node.lineno)
    return lines


def test_every_file_write_is_in_a_known_atomic_place():
    unknown = {name: lines for name, path in _modules().items()
               if (lines := _writes(path)) and name not in WRITERS}
    assert not unknown, f"write calls outside apa.run_folder.write_atomic and the known writers: {unknown}"


def test_test_files_have_unique_names():
    """pytest imports test files by their base name (no __init__.py in tests/): two alike would not both run."""
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []

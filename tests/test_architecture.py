"""The layout promises of docs/architecture.md, checked on the source (nothing is run):
no import cycle, commands that never import one another, small files and functions, and
one definition of each concept that used to have several."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cftools"
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 80
# Functions allowed past MAX_FUNCTION_LINES, each with the reason splitting would hide
# its logic (docs/architecture.md lists them too).
LONG_FUNCTIONS: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every cftools module ``name`` imports, at any depth (lazy imports included)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            # "from package import module" imports the module; else the package itself
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_no_import_cycle_anywhere_in_the_package():
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles = []

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _command_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["cftools", "commands"] and len(parts) > 2:
        return parts[2]
    return None


def test_no_command_imports_another_command():
    crossing = [(a, b) for a, targets in GRAPH.items() for b in targets
                if _command_of(a) and _command_of(b) and _command_of(a) != _command_of(b)]
    assert not crossing, crossing


def test_core_and_formats_never_import_commands():
    upward = [(a, b) for a, targets in GRAPH.items() for b in targets
              if a.startswith(("cftools.core", "cftools.formats", "cftools.data"))
              and b.startswith("cftools.commands")]
    assert not upward, upward


def test_formats_never_import_core():
    upward = [(a, b) for a, targets in GRAPH.items() for b in targets
              if a.startswith("cftools.formats") and b.startswith("cftools.core")]
    assert not upward, upward


def test_no_file_over_the_limit():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, long


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = node.lineno  # from the def: click options above are declarations
            yield node.name, node.end_lineno - start + 1


def test_no_long_function_without_a_reason():
    long = {f"{name}.{fn}": n for name, path in MODULES.items() for fn, n in _functions(path)
            if n > MAX_FUNCTION_LINES}
    unexplained = {k: v for k, v in long.items() if k not in LONG_FUNCTIONS}
    assert not unexplained, unexplained
    stale = set(LONG_FUNCTIONS) - set(long)
    assert not stale, f"no longer long, drop from LONG_FUNCTIONS: {stale}"


def _definitions(name: str) -> list[str]:
    """Modules defining ``name`` at any depth (functions, classes, assignments)."""
    where = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                where.append(module)
            elif isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == name for t in node.targets):
                where.append(module)
    return where


@pytest.mark.parametrize("concept, name", [
    ("the best-F threshold search", "best_f1_cut"),
    ("the identity cap", "IDENTITY_CAP"),
    ("the auto kNN policy", "auto_uses_exact"),
    ("the auto kNN tuning", "tune_ivf"),
    ("the union-find", "union_find"),
    ("the singleton policy", "settle_singletons"),
    ("the batch inference loop", "link_array"),
    ("the threshold key format", "threshold_key"),
    ("the link mode key format", "link_mode_key"),
])
def test_one_definition_of_each_concept(concept, name):
    assert len(_definitions(name)) == 1, (concept, _definitions(name))


def test_threshold_keys_are_built_in_one_place():
    """Keys of a thresholds dict ("directed_infomap", "link_mode_peaks") are made by
    formats.thresholds alone: no other module spells the prefixes."""
    home = MODULES["cftools.formats.thresholds"]
    spelled = [str(p) for p in MODULES.values() if p != home
               and re.search(r"""f["'](link_mode_|directed_|\{mode\}_)""", p.read_text())]
    assert not spelled, spelled


def test_the_identity_cap_is_written_once():
    """30 is the identity cap in one place; others take IDENTITY_CAP."""
    written = [str(p) for p in MODULES.values() if re.search(r"\bcap\w*\s*[:=][^=\n]*\b30\b",
                                                              p.read_text())]
    assert len(written) <= 1, written

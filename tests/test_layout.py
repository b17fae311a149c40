"""How dfxlib is laid out: data flows one way (no import cycle, counting imports inside functions too), and an
import inside a function is there to keep a light command light, never to dodge a cycle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dfxlib"

#: imports kept inside functions, and why: `dfx --help`, `dfx report` and the settings check must not load torch
LAZY = {
    ("cli", "runner"), ("cli", "tables"), ("cli", "audit"), ("cli", "index"), ("cli", "inference"), ("cli", "lab"),
    ("cli", "config"), ("cli", "plan"), ("cli", "run"), ("cli", "submit"), ("config", "backbones"), ("config", "perturb"), ("run", "data"), ("run", "pixels"),
    ("runner", "train"),
}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(dfxlib module imported, whether at module level) for every relative import of one module."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body} | {id(n) for s in tree.body if isinstance(s, ast.If) for n in s.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
            out += [(n.split(".")[0], id(node) in top) for n in names]
    return out


def graph() -> dict[str, list[tuple[str, bool]]]:
    return {p.stem: imports(p) for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}


def cycle(g: dict[str, set[str]]) -> list[str]:
    """One import cycle of graph `g` (module -> modules it imports) as a path, or [] when there is none."""
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str]:
        state[m] = 1
        for t in sorted(g.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (found := visit(t, path + [t])):
                return found
        state[m] = 2
        return []
    for m in sorted(g):
        if m not in state and (found := visit(m, [m])):
            return found
    return []


def test_no_import_cycle():
    g = {m: {t for t, _ in deps if t != m} for m, deps in graph().items()}
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check can fail
    assert cycle(g) == [], "import cycle: " + " -> ".join(cycle(g))


def test_imports_inside_functions_are_the_listed_light_ones():
    lazy = {(m, t) for m, deps in graph().items() for t, top in deps if not top}
    assert lazy <= LAZY, f"imports inside functions not in LAZY: {sorted(lazy - LAZY)}"

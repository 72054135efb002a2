"""The package's shape: no import cycle, no overlong module without a reason, no block of code written twice."""

from __future__ import annotations

import ast
import hashlib
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import sr_spatial

SRC = Path(sr_spatial.__file__).parent
PACKAGE = SRC.name
MAX_LINES = 400
#: Words a module's docstring must hold to be longer than ``MAX_LINES``: the reason follows them.
LONG_REASON = "Longer than 400 lines"
DUPLICATE_LINES = 6

#: Files allowed to stay over ``MAX_LINES`` for now, each with what removes the exception.
PENDING_LONG = {
    "tl/_superresolve.py": "issue 13 reshapes it (train once, render, sample, write); split it then",
}
#: Pairs of files allowed to share a block of ``DUPLICATE_LINES`` lines for now, each with what removes it.
PENDING_DUPLICATES = {
    frozenset({"pp/_stmap.py", "tl/_superresolve.py"}): "the slide parameter block; a slide object (issue 12)",
    frozenset({"pp/_stmap.py", "tl/_train.py"}): "the slide parameter block; a slide object (issue 12)",
    frozenset({"tl/_superresolve.py", "tl/_train.py"}): "the slide parameter block; a slide object (issue 12)",
    frozenset({"tl/_reference.py", "tl/_train.py"}): "Scenes built in two places; one scene builder (issue 12)",
}


def _modules() -> dict[str, Path]:
    """Dotted name of every module of the package, ``pkg.sub`` for ``pkg/sub/__init__.py``."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _import_nodes(tree: ast.Module):
    """Imports that run when the module is imported or type-checked: all but those inside functions."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            stack.extend(ast.iter_child_nodes(node))


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports, ``if TYPE_CHECKING:`` blocks included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a import b` imports the module a.b when there is one, else the name b from a.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, as the modules along it, or ``None``."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_import_graph_has_no_cycle():
    modules = _modules()
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    assert sum(len(edges) for edges in graph.values()) > len(modules)  # the parser does find the imports
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_sees_type_only_imports(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import B\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n\ndef f():\n    import pkg.a\n"
    )
    modules = {"pkg": package / "__init__.py", "pkg.a": package / "a.py", "pkg.b": package / "b.py"}
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}}
    assert _cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_long_modules_say_why():
    too_long = {}
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC).as_posix()
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and LONG_REASON not in docstring and relative not in PENDING_LONG:
            too_long[relative] = lines
    assert not too_long, (
        f"modules over {MAX_LINES} lines whose docstring does not say why ({LONG_REASON!r}): {too_long}"
    )


def _normalised(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines with their line numbers, stripped of indentation; imports left out.

    Imports are left out because two modules of one layer naturally import alike; the check is about logic.
    """
    text = path.read_text()
    imports = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            imports.update(range(node.lineno, node.end_lineno + 1))
    return [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and number not in imports and line.strip() != "if TYPE_CHECKING:"
    ]


def _repeated_blocks(paths: list[Path], root: Path, size: int) -> dict[str, list[str]]:
    """Runs of ``size`` identical non-blank lines found in more than one place, as ``file:line`` per place."""
    places = defaultdict(list)
    for path in paths:
        lines = _normalised(path)
        for start in range(len(lines) - size + 1):
            window = "\n".join(text for _, text in lines[start : start + size])
            key = hashlib.sha1(window.encode()).hexdigest()
            places[key].append(f"{path.relative_to(root).as_posix()}:{lines[start][0]}")
    return {key: where for key, where in places.items() if len(where) > 1}


def test_duplicate_finder_finds_a_repeated_block(tmp_path):
    block = "".join(f"value_{i} = compute({i})\n" for i in range(DUPLICATE_LINES))
    imports = "".join(f"from package.module_{i} import name_{i}\n" for i in range(DUPLICATE_LINES))
    (tmp_path / "a.py").write_text(imports + block)
    (tmp_path / "b.py").write_text("def f():\n" + "".join(f"    {line}\n" for line in block.splitlines()))
    (tmp_path / "c.py").write_text(imports + block.replace("value_3", "other"))
    found = _repeated_blocks(sorted(tmp_path.glob("*.py")), tmp_path, DUPLICATE_LINES)
    assert list(found.values()) == [[f"a.py:{DUPLICATE_LINES + 1}", "b.py:2"]]


def test_no_block_repeated_in_src():
    found = _repeated_blocks(sorted(SRC.rglob("*.py")), SRC, DUPLICATE_LINES)
    unexpected = set()
    for where in found.values():
        files = sorted({place.rpartition(":")[0] for place in where})
        pairs = [frozenset(pair) for pair in combinations(files, 2)] or [frozenset(files)]
        if not all(pair in PENDING_DUPLICATES for pair in pairs):
            unexpected.add(", ".join(where))
    assert not unexpected, f"blocks of {DUPLICATE_LINES} identical lines written more than once: {sorted(unexpected)}"

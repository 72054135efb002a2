"""The package's shape: no import cycle, no overlong module without a reason, no block of code written twice,
one short pipeline over the methods, and benchmarks that use the public API only."""

from __future__ import annotations

import ast
import hashlib
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import pytest
from _structure_rules import ALLOWED_STEMS, modules, violations

import sr_spatial

SRC = Path(sr_spatial.__file__).parent
PACKAGE = SRC.name
MAX_LINES = 400
#: Words a module's docstring must hold to be longer than ``MAX_LINES``: the reason follows them.
LONG_REASON = "Longer than 400 lines"
DUPLICATE_LINES = 6

#: Files allowed to stay over ``MAX_LINES`` for now, each with what removes the exception.
PENDING_LONG: dict[str, str] = {}
#: ``superresolve``'s limits: parameters (``**kwargs`` counts as one) and lines of body below its docstring.
MAX_PARAMETERS = 15
MAX_BODY_LINES = 120
#: The methods' names; compared to a value in one module only, the registry (the CLI's demo list aside).
METHOD_NAMES = {"histology", "diffusion", "bicubic", "nearest"}
NAMES_COMPARED_IN = {"tl/_methods/_registry.py", "_cli/_demo.py"}
BENCHMARKS = SRC.parents[1] / "benchmarks"
#: Pairs of files allowed to share a block of ``DUPLICATE_LINES`` lines for now, each with what removes it.
PENDING_DUPLICATES = {
    frozenset({"pp/_stmap.py", "tl/_superresolve.py"}): "the slide parameter block; a slide object (issue 12)",
    frozenset({"pp/_stmap.py", "diffusion/_fit.py"}): "the slide parameter block; a slide object (issue 12)",
    frozenset({"tl/_reference.py", "diffusion/_fit.py"}): "Scenes built twice; one scene builder (issue 12)",
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
    """Every import of a module: at the top, under ``if TYPE_CHECKING:`` and inside functions alike.

    An import deferred into a function still ties the two modules together; counting it keeps a cycle from
    hiding there.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


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
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    (package / "c.py").write_text("def f():\n    from pkg.a import A\n")
    (package / "d.py").write_text("from pkg.c import f\n")
    modules = {name: package / f"{name.rpartition('.')[2]}.py" for name in ("pkg.a", "pkg.b", "pkg.c", "pkg.d")}
    modules["pkg"] = package / "__init__.py"
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}, "pkg.d": {"pkg.c"}}
    assert _cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
    # An import inside a function closes a cycle too.
    del graph["pkg.b"], graph["pkg.a"]
    graph["pkg.a"] = {"pkg.d"}
    assert _cycle(graph) == ["pkg.a", "pkg.d", "pkg.c", "pkg.a"]


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


def _function(path: Path, name: str) -> ast.FunctionDef:
    tree = ast.parse(path.read_text())
    return next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name)


def test_superresolve_is_a_short_pipeline():
    function = _function(SRC / "tl" / "_superresolve.py", "superresolve")
    args = function.args
    n_parameters = len(args.posonlyargs + args.args + args.kwonlyargs) + (args.vararg is not None)
    n_parameters += args.kwarg is not None
    assert n_parameters <= MAX_PARAMETERS
    body = function.body[1:] if ast.get_docstring(function) else function.body
    assert body[-1].end_lineno - body[0].lineno + 1 <= MAX_BODY_LINES


def _compared_names(tree: ast.Module) -> set[str]:
    """Method names a module compares a value with (``==``, ``!=``, ``in``, ``match``)."""
    found = set()

    def names(node) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value} & METHOD_NAMES
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return set().union(*(names(e) for e in node.elts)) if node.elts else set()
        return set()

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                found |= names(operand)
        elif isinstance(node, ast.MatchValue):
            found |= names(node.value)
    return found


def test_method_names_are_compared_in_the_registry_only():
    comparing = {
        path.relative_to(SRC).as_posix() for path in SRC.rglob("*.py") if _compared_names(ast.parse(path.read_text()))
    }
    assert comparing <= NAMES_COMPARED_IN, f"method names compared outside the registry: {sorted(comparing)}"
    assert _compared_names(ast.parse("if method == 'diffusion' or m in ('nearest',): pass")) == {"diffusion", "nearest"}


def test_both_kinds_of_model_are_classes_that_save_and_load():
    for model in (sr_spatial.model.HistologyModel, sr_spatial.model.DiffST):
        assert callable(getattr(model, "save", None))
        assert isinstance(model.__dict__["load"], classmethod)


def _private_uses(path: Path) -> list[str]:
    """Private modules of sr_spatial imported, and private attributes read off anything but ``self`` or ``cls``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        modules = []
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        private = [
            m for m in modules if m.split(".")[0] == PACKAGE and any(p.startswith("_") for p in m.split(".")[1:])
        ]
        if private:
            found.append(f"{path.name}:{node.lineno} imports {private[0]}")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno} uses {ast.unparse(node)}")
    return found


def test_benchmarks_use_the_public_api_only(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from sr_spatial.tl._train import output_scene\nimport sr_spatial as sr\nx = model._inputs(1)\n")
    assert len(_private_uses(probe)) == 2
    if not BENCHMARKS.is_dir():
        pytest.skip("benchmarks/ is not beside the installed package")
    found = [use for path in sorted(BENCHMARKS.rglob("*.py")) for use in _private_uses(path)]
    assert not found, f"benchmarks reach past the public API: {found}"


def test_layout_rules_hold():
    """One package per method, a core both share, no private name across modules, small modules and functions."""
    assert len(modules()) > 50 and {"model", "method", "config"} <= ALLOWED_STEMS  # the check sees the package
    found = violations()
    assert not found, "layout rules broken (run `python tests/_structure_rules.py`):\n" + "\n".join(found)


def test_layout_check_finds_each_kind_of_violation(tmp_path):
    package = tmp_path / "sr_spatial"
    for folder in ("core", "histology", "diffusion", "tl", "model"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "histology" / "_fit.py").write_text("from sr_spatial.diffusion._fit import train\n")
    (package / "diffusion" / "_fit.py").write_text("def train():\n" + "    x = 1\n" * 81)
    (package / "core" / "_grid.py").write_text("from sr_spatial.tl._grid import _cells\n")
    (package / "tl" / "_grid.py").write_text("_cells = 1\n" + "\n" * 400)
    (package / "model" / "_histology_io.py").write_text("")
    found = "\n".join(violations(package))
    for expected in (
        "stem 'grid' names 2 modules",
        "sr_spatial.model._histology_io is named for 'histology'",
        "sr_spatial.histology._fit:1 imports sr_spatial.diffusion._fit (another method's package)",
        "sr_spatial.core._grid:1 imports sr_spatial.tl._grid (the core builds on neither methods nor tools)",
        "imports the private name _cells from sr_spatial.tl._grid",
        "sr_spatial.tl._grid has 401 lines",
        "sr_spatial.diffusion._fit.train (line 1) has a body of 81 lines",
    ):
        assert expected in found
    assert len(found.splitlines()) == 7

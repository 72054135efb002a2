"""The layout rules of ``src/sr_spatial``: one package per method, a shared core, small modules and functions.

Run from the project root, ``python tests/_structure_rules.py``, to list every violation (exit status 1 if any);
``tests/test_structure.py`` asserts there are none. The rules (issue 31):

- a module stem (its file name without leading underscores) is shared by two modules only in the slots every method
  package repeats (``ALLOWED_STEMS``), or ``__init__``/``__main__``;
- a module named for one method (``METHOD_WORDS``) lives inside that method's package;
- one method package never imports the other, and the core (``sr_spatial.core``) imports neither a method's package
  nor the tools (``sr_spatial.tl``);
- a private name (not a module) is never imported from another module;
- a module holds at most ``MAX_MODULE_LINES`` lines, a function body at most ``MAX_BODY_LINES``.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sr_spatial"
PACKAGE = "sr_spatial"
#: Stems each method package repeats (its method, model, config, fitting, guard, save/load, ...).
ALLOWED_STEMS = {
    "__init__", "__main__", "method", "model", "config", "fit", "guard", "io", "reference", "train", "module",
    "base", "registry", "options",
}  # fmt: skip
#: Words naming one method, each with the package that method's modules live in.
METHOD_WORDS = {
    "histology": "histology",
    "learned": "histology",
    "regression": "histology",
    "diffusion": "diffusion",
    "scale_transfer": "diffusion",
}
METHOD_PACKAGES = {"histology", "diffusion"}
#: The command-line interface's package; its modules are named for their commands.
CLI = "_cli"
#: What both methods share.
CORE = "core"
MAX_MODULE_LINES = 400
MAX_BODY_LINES = 80


def modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted name of every module under ``src``, ``pkg.sub`` for ``pkg/sub/__init__.py``."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _stem(path: Path) -> str:
    return path.stem if path.stem.startswith("__") else path.stem.lstrip("_")


def _method_package(name: str) -> str | None:
    """The method package module ``name`` lies in (``sr_spatial.histology...``), if any."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in METHOD_PACKAGES else None


def shared_stems(mods: dict[str, Path]) -> list[str]:
    """One violation per stem that names two modules or more outside the allowed slots."""
    by_stem = defaultdict(list)
    for name, path in mods.items():
        # A CLI command's module is named for the command, which is named for the function it calls.
        if f".{CLI}." not in f".{name}.":
            by_stem[_stem(path)].append(name)
    return [
        f"stem {stem!r} names {len(names)} modules: {', '.join(sorted(names))}"
        for stem, names in sorted(by_stem.items())
        if len(names) > 1 and stem not in ALLOWED_STEMS
    ]


def misplaced_method_modules(mods: dict[str, Path]) -> list[str]:
    """Modules named for one method outside that method's package."""
    found = []
    for name, path in mods.items():
        stem = _stem(path)
        for word, package in METHOD_WORDS.items():
            named = word in stem.split("_") if "_" not in word else word in stem
            if named and _method_package(name) != package:
                found.append(f"{name} is named for {word!r} but lies outside sr_spatial.{package}")
                break
    return found


def _import_targets(name: str, path: Path, tree: ast.Module, mods: dict[str, Path]):
    """``(node, base module, imported names)`` of every ``from ... import`` of the module, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node, base, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, []


def cross_method_imports(mods: dict[str, Path]) -> list[str]:
    """Imports from one method package into the other."""
    found = []
    for name, path in mods.items():
        own = _method_package(name)
        if own is None:
            continue
        for node, base, _ in _import_targets(name, path, ast.parse(path.read_text()), mods):
            other = _method_package(base)
            if other is not None and other != own:
                found.append(f"{name}:{node.lineno} imports {base} (another method's package)")
    return found


def core_imports(mods: dict[str, Path]) -> list[str]:
    """Imports of a method's package or of the tools into the core."""
    found = []
    for name, path in mods.items():
        if not name.startswith(f"{PACKAGE}.{CORE}"):
            continue
        for node, base, _ in _import_targets(name, path, ast.parse(path.read_text()), mods):
            if _method_package(base) is not None or base.split(".")[:2] == [PACKAGE, "tl"]:
                found.append(f"{name}:{node.lineno} imports {base} (the core builds on neither methods nor tools)")
    return found


def private_name_imports(mods: dict[str, Path]) -> list[str]:
    """Private names (not modules) imported from another module of the package."""
    found = []
    for name, path in mods.items():
        for node, base, names in _import_targets(name, path, ast.parse(path.read_text()), mods):
            if base.split(".")[0] != PACKAGE:
                continue
            for imported in names:
                if imported.startswith("_") and not imported.startswith("__") and f"{base}.{imported}" not in mods:
                    found.append(f"{name}:{node.lineno} imports the private name {imported} from {base}")
    return found


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body below its docstring."""
    body = node.body[1:] if ast.get_docstring(node) and len(node.body) > 1 else node.body
    return body[-1].end_lineno - body[0].lineno + 1


def oversized(mods: dict[str, Path]) -> list[str]:
    """Modules over ``MAX_MODULE_LINES`` lines and function bodies over ``MAX_BODY_LINES`` lines."""
    found = []
    for name, path in mods.items():
        text = path.read_text()
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{name} has {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (n := _body_lines(node)) > MAX_BODY_LINES:
                found.append(
                    f"{name}.{node.name} (line {node.lineno}) has a body of {n} lines (at most {MAX_BODY_LINES})"
                )
    return found


def violations(src: Path = SRC) -> list[str]:
    """Every violation of the layout rules under ``src``."""
    mods = modules(src)
    return [
        *shared_stems(mods),
        *misplaced_method_modules(mods),
        *cross_method_imports(mods),
        *core_imports(mods),
        *private_name_imports(mods),
        *oversized(mods),
    ]


if __name__ == "__main__":
    found = violations()
    print("\n".join(found))
    print(f"{len(found)} layout violations")
    sys.exit(1 if found else 0)

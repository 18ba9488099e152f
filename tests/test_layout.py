"""The layout keeps the architecture readable: limits a review would otherwise have to police.

One folder per stage of the data flow, few modules at the top, no module or function too long
to read, no module reaching into another's private names, every public function documented,
and no user-facing text pointing at files that only exist in this project's own workspace.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "runstate"
MAX_TOP_LEVEL_MODULES = 8
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
# The projector's fold is one deliberate hot loop over locals (see its comment).
LONG_FUNCTIONS_ALLOWED = {("engine/projector.py", "advance")}
GENERATED = re.compile(
    r"^# Generated from src/runstate/(?P<source>\S+\.py) by tools/async_to_sync\.py"
)


def _modules() -> Iterator[tuple[str, ast.Module, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(text), text


def test_at_most_eight_modules_directly_under_the_package() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize("folder", ["adapters", "engine", "relay", "sinks", "cli", "testing"])
def test_each_stage_is_a_package(folder: str) -> None:
    assert (PACKAGE / folder / "__init__.py").is_file()


def test_each_sql_adapter_keeps_its_sql_beside_it() -> None:
    for adapter in ("sqlite", "postgres"):
        sql = PACKAGE / "adapters" / adapter / "sql"
        assert (sql / "schema.sql").is_file()
        assert (sql / "queries.sql").is_file()
        assert sorted(sql.glob("0001_*.sql"))
    assert not (PACKAGE / "sql").exists()


def test_no_module_is_over_500_lines() -> None:
    long = [(name, text.count("\n")) for name, _, text in _modules()]
    assert [item for item in long if item[1] > MAX_MODULE_LINES] == []


def test_no_function_is_over_80_lines() -> None:
    long = []
    for name, tree, _ in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES and (name, node.name) not in LONG_FUNCTIONS_ALLOWED:
                    long.append((name, node.name, size))
    assert long == []


def _generated_from(text: str) -> str | None:
    """The dotted module a generated module was made from (tools/async_to_sync.py), if any."""
    match = GENERATED.match(text)
    if match is None:
        return None
    return "runstate." + match["source"].removesuffix(".py").replace("/", ".")


def test_no_module_imports_a_private_name_of_another() -> None:
    # A generated module is its source rewritten: it shares its source's private helpers
    # (and data, such as the in-memory registry) rather than copying them.
    found = []
    for name, tree, text in _modules():
        source = _generated_from(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != source:
                found += [
                    (name, node.module, alias.name)
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert found == []


def test_generated_modules_name_their_source() -> None:
    generated = [name for name, _, text in _modules() if _generated_from(text)]
    assert sorted(generated) == [
        "sync/executor.py",
        "sync/memory.py",
        "sync/run_engine.py",
        "sync/sqlite.py",
        "sync/store.py",
    ]


def test_every_public_function_and_class_has_a_docstring() -> None:
    missing = []

    def visit(node: ast.AST, module: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            public = not child.name.startswith("_") and not child.name.startswith("test_")
            if public and ast.get_docstring(child) is None:
                missing.append(f"{module}:{child.lineno} {prefix}{child.name}")
            if isinstance(child, ast.ClassDef) and public:
                visit(child, module, f"{prefix}{child.name}.")

    for name, tree, _ in _modules():
        visit(tree, name, "")
    assert missing == []


def test_user_facing_text_never_points_into_the_workspace() -> None:
    # README, docs and docstrings ship to users: they link the project's own docs/design.md.
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    texts += sorted(PACKAGE.rglob("*.py")) + sorted(PACKAGE.rglob("*.sql"))
    client = ROOT / "clients" / "typescript"
    texts += [*sorted((client / "src").rglob("*.ts")), client / "package.json"]
    texts += [client / "README.md"] if (client / "README.md").exists() else []
    offending = []
    for path in texts:
        text = path.read_text(encoding="utf-8")
        for marker in ("../shared", "shared/spec", "CONTRACT §", "CONTRACT section", "ADR-0013"):
            if marker in text:
                offending.append(f"{path.relative_to(ROOT)}: {marker}")
    assert offending == []

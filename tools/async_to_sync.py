"""Generate runstate's synchronous modules from their async sources: an AST rewrite.

Usage::

    python tools/async_to_sync.py            # rewrite every generated module
    python tools/async_to_sync.py --check    # exit 1, naming them, if any is stale

Each target in ``TARGETS`` is one async module of ``src/runstate`` turned into a module of
``runstate.sync``. The rewrite, on the syntax tree (comments kept):

- ``async def`` / ``async with`` / ``async for`` lose ``async``; ``await x`` becomes ``x``;
  a statement ``await asyncio.gather(a, b)`` becomes ``a`` then ``b``;
- names in ``RENAMES`` are replaced (bare names, attributes and dotted names alike), and
  ``Awaitable[T]`` becomes ``T``; ``except asyncio.CancelledError`` clauses go (nothing
  cancels a thread);
- imports become absolute, and a renamed name is imported from where ``IMPORTS`` says;
- a top-level definition that comes out unchanged (and uses nothing that changed) is not
  copied but imported from the source module, so both share one object: the in-memory data
  registry, the SQLite waiters, loggers, helpers;
- docstrings drop ``await`` and ``async with``; the result goes through ruff (unused imports,
  import order, format).

Generated files start with a comment naming their source; ``tests/test_generated.py`` fails
(so ``make test`` fails) when one is stale.
"""

from __future__ import annotations

import argparse
import ast
import copy
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import ast_comments

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "runstate"
HEADER = "# Generated from src/runstate/{source} by tools/async_to_sync.py: do not edit.\n"


@dataclass(frozen=True, kw_only=True)
class Target:
    """One generated module: its async source, where it goes, what it keeps."""

    source: str
    target: str
    keep: tuple[str, ...] | None = None
    """Top-level classes and functions to keep; ``None`` keeps everything."""
    doc: str | None = None
    """The generated module's docstring; ``None`` rewrites the source's."""


TARGETS: tuple[Target, ...] = (
    Target(
        source="store.py",
        target="sync/store.py",
        keep=("RunStateStore", "OutboxStore", "RunCatalog"),
        doc=(
            "The synchronous store interfaces, as ``typing.Protocol`` classes: the same "
            "methods as\n``runstate.store``'s, blocking. Every synchronous store is safe to "
            "share between threads.\n"
        ),
    ),
    Target(
        source="engine/run_engine.py",
        target="sync/run_engine.py",
        doc=(
            "The synchronous run engine: ``runstate.engine.RunEngine``'s commands, blocking.\n\n"
            "The same logic as the async engine (reads, projects, checks the transition table,\n"
            "appends with ``expected_seq``, retries conflicts a bounded number of times), with a\n"
            "``threading.Lock`` per run: one engine is shared by any number of threads.\n"
        ),
    ),
    Target(
        source="engine/executor.py",
        target="sync/executor.py",
        doc=(
            "The synchronous executor: ``Worker``, ``run_sync`` and ``RunContext`` for plain\n"
            "functions.\n\n"
            "A handler is ``def handler(ctx) -> JSON`` and records steps with ``with\n"
            "ctx.step(name):``. ``Worker`` drives queued runs on ``concurrency`` threads; its\n"
            "``stop()`` lets each thread finish the run it drives. Retries, cooperative\n"
            "cancellation and pausing work as in ``runstate.engine.executor``.\n"
        ),
    ),
    Target(
        source="adapters/memory.py",
        target="sync/memory.py",
        doc=(
            "The synchronous in-memory store: ``memory://`` and ``memory://name``, blocking.\n\n"
            "It shares the data of a ``memory://name`` with the async stores of the same name in\n"
            "this process (one object, under one lock), so a synchronous program and an async\n"
            "relay can work on one store. Payloads are copied on the way in; events handed\n"
            "back are shared, so treat them as read-only.\n"
        ),
    ),
    Target(
        source="adapters/sqlite/_store.py",
        target="sync/sqlite.py",
        doc=(
            "The synchronous SQLite store: the store, catalog and outbox on one database file.\n\n"
            "Every call runs on the calling thread, with no hand-off: reads on a connection of\n"
            "the thread's own, writes group-committed by the calling threads themselves (the\n"
            "first to find no commit in progress runs every waiting write in one transaction,\n"
            "each in its own savepoint). The SQL, schema, migrations, options and durability\n"
            "are the async store's; see ``runstate.adapters.sqlite`` for URLs and options.\n"
        ),
    ),
)

#: Names of the async modules and what the synchronous modules use instead.
RENAMES: dict[str, str] = {
    "asyncio.Event": "threading.Event",
    "asyncio.Lock": "threading.Lock",
    "asyncio.Queue": "queue.Queue",
    "asyncio.sleep": "time.sleep",
    "asynccontextmanager": "contextmanager",
    "AsyncIterator": "Iterator",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "async_waiter": "thread_waiter",
    "AsyncWaiter": "ThreadWaiter",
    "StoreBase": "SyncStoreBase",
    "ConnectionThread": "CallerConnections",
    "WorkerTasks": "WorkerThreads",
}

#: Where the synchronous modules import a name from, when it is not where the source had it.
IMPORTS: dict[str, str] = {
    "contextmanager": "contextlib",
    "Iterator": "collections.abc",
    "CallerConnections": "runstate.adapters.sqlite._callers",
    "WorkerThreads": "runstate.sync._workers",
    "RunStateStore": "runstate.sync.store",
    "OutboxStore": "runstate.sync.store",
    "RunCatalog": "runstate.sync.store",
    "RunEngine": "runstate.sync.run_engine",
}

_DOC_REWRITES = ((re.compile(r"\bawait "), ""), (re.compile(r"\basync with\b"), "with"))


class _Unasync(ast.NodeTransformer):
    """The rewrite of one module's tree, in place."""

    def __init__(self) -> None:
        self.modules_needed: set[str] = set()

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        self.generic_visit(node)
        return ast.copy_location(
            ast.FunctionDef(
                name=RENAMES.get(node.name, node.name),
                args=node.args,
                body=node.body,
                decorator_list=node.decorator_list,
                returns=node.returns,
                type_comment=node.type_comment,
            ),
            node,
        )

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self.generic_visit(node)
        node.name = RENAMES.get(node.name, node.name)
        return node

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        self.generic_visit(node)
        return ast.copy_location(
            ast.With(items=node.items, body=node.body, type_comment=node.type_comment), node
        )

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        self.generic_visit(node)
        return ast.copy_location(
            ast.For(
                target=node.target,
                iter=node.iter,
                body=node.body,
                orelse=node.orelse,
                type_comment=node.type_comment,
            ),
            node,
        )

    def visit_comprehension(self, node: ast.comprehension) -> ast.AST:
        self.generic_visit(node)
        node.is_async = 0
        return node

    def visit_Await(self, node: ast.Await) -> ast.AST:
        value: ast.AST = self.visit(node.value)
        return value

    def visit_Expr(self, node: ast.Expr) -> ast.AST | list[ast.stmt]:
        value = node.value
        call = value.value if isinstance(value, ast.Await) else None
        if isinstance(call, ast.Call) and _dotted(call.func) == "asyncio.gather":
            if call.keywords:
                raise SyntaxError(f"line {node.lineno}: asyncio.gather(...) with keywords")
            # The awaitables run one after another: each is a plain call now.
            return [ast.copy_location(ast.Expr(value=self.visit(arg)), node) for arg in call.args]
        self.generic_visit(node)
        return node

    def visit_Try(self, node: ast.Try) -> ast.AST | list[ast.stmt]:
        self.generic_visit(node)
        node.handlers = [
            handler
            for handler in node.handlers
            if handler.type is None or _dotted(handler.type) != "asyncio.CancelledError"
        ]
        if not node.handlers and not node.finalbody:
            return [*node.body, *node.orelse]
        return node

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        if _dotted(node.value) in ("Awaitable", "collections.abc.Awaitable", "typing.Awaitable"):
            inner: ast.AST = self.visit(node.slice)
            return inner
        self.generic_visit(node)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        dotted = _dotted(node)
        if dotted is not None and dotted in RENAMES:
            return ast.copy_location(self._name_of(RENAMES[dotted], node.ctx), node)
        self.generic_visit(node)
        renamed = RENAMES.get(node.attr)
        if renamed is not None and "." not in renamed:
            node.attr = renamed
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        renamed = RENAMES.get(node.id)
        if renamed is None:
            return node
        return ast.copy_location(self._name_of(renamed, node.ctx), node)

    def _name_of(self, dotted: str, ctx: ast.expr_context) -> ast.expr:
        parts = dotted.split(".")
        if len(parts) > 1:
            self.modules_needed.add(parts[0])
        if len(parts) == 1:
            return ast.Name(id=parts[0], ctx=ctx)
        expr: ast.expr = ast.Name(id=parts[0], ctx=ast.Load())
        for part in parts[1:-1]:
            expr = ast.Attribute(value=expr, attr=part, ctx=ast.Load())
        return ast.Attribute(value=expr, attr=parts[-1], ctx=ctx)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def _absolute(module: str | None, level: int, source_module: str) -> str:
    if level == 0:
        assert module is not None
        return module
    package = source_module.split(".")[:-level]
    return ".".join([*package, module] if module else package)


def _rewrite_imports(body: list[ast.stmt], source_module: str) -> list[ast.stmt]:
    """Absolute imports; each renamed name imported from where ``IMPORTS`` says."""
    rewritten: list[ast.stmt] = []
    for node in body:
        if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
            rewritten.append(node)
            continue
        module = _absolute(node.module, node.level, source_module)
        by_module: dict[str, list[ast.alias]] = {}
        for alias in node.names:
            name = RENAMES.get(alias.name, alias.name)
            if "." in name:
                continue  # a dotted replacement is reached through its module's import
            target = IMPORTS.get(name, module)
            by_module.setdefault(target, []).append(ast.alias(name=name, asname=alias.asname))
        for target, names in by_module.items():
            statement = ast.ImportFrom(module=target, names=names, level=0)
            rewritten.append(ast.copy_location(statement, node))
    return rewritten


def _defined_names(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _used_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _share_unchanged(
    original: list[ast.stmt], generated: list[ast.stmt], source_module: str
) -> list[ast.stmt]:
    """Import what came out unchanged from the source module instead of copying it."""
    pairs = [
        (node, before)
        for node, before in zip(generated, original, strict=True)
        if _defined_names(node) and not _is_docstring(node)
    ]
    changed = {
        name
        for node, before in pairs
        if ast_comments.unparse(node) != ast_comments.unparse(before)
        for name in _defined_names(node)
    }
    while True:  # a definition that uses something changed has changed too
        more = {
            name
            for node, _ in pairs
            if not changed.intersection(_defined_names(node)) and _used_names(node) & changed
            for name in _defined_names(node)
        }
        if not more:
            break
        changed |= more
    shared = {id(node) for node, _ in pairs if not changed.intersection(_defined_names(node))}
    kept: list[ast.stmt] = []
    for node in generated:
        if id(node) in shared:
            # The comments just above a shared definition go with it.
            while kept and isinstance(kept[-1], ast_comments.Comment):
                kept.pop()
        else:
            kept.append(node)
    used = set().union(*(_used_names(node) for node in kept))
    names = sorted(
        name
        for node, _ in pairs
        if id(node) in shared
        for name in _defined_names(node)
        if name in used
    )
    if not names:
        return kept
    imports = ast.ImportFrom(
        module=source_module, names=[ast.alias(name=name) for name in names], level=0
    )
    position = next(
        index
        for index, node in enumerate(kept)
        if not isinstance(node, ast.Import | ast.ImportFrom | ast_comments.Comment)
        and not _is_docstring(node)
    )
    return [*kept[:position], imports, *kept[position:]]


def _rewrite_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and _is_docstring(body[0]):
            constant = body[0].value
            for pattern, replacement in _DOC_REWRITES:
                constant.value = pattern.sub(replacement, constant.value)


def _ruff(code: str, target: Path) -> str:
    ruff = [sys.executable, "-m", "ruff"]
    filename = ["--stdin-filename", str(target)]
    steps = [
        [
            *ruff,
            "check",
            "--fix",
            "--select",
            "F401,I,UP034",
            "--exit-zero",
            "--quiet",
            *filename,
            "-",
        ],
        [*ruff, "format", "--quiet", *filename, "-"],
    ]
    for step in steps:
        code = subprocess.run(
            step, input=code, capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout
    return code


def generate(target: Target) -> str:
    """Return the text of one generated module."""
    return rewrite(
        (PACKAGE / target.source).read_text(encoding="utf-8"),
        source=target.source,
        target=PACKAGE / target.target,
        keep=target.keep,
        doc=target.doc,
    )


def rewrite(
    text: str,
    *,
    source: str,
    target: Path,
    keep: tuple[str, ...] | None = None,
    doc: str | None = None,
) -> str:
    """Rewrite the async module ``text`` (at ``src/runstate/<source>``) into its sync twin."""
    source_module = "runstate." + source.removesuffix(".py").replace("/", ".")
    tree = ast_comments.parse(text)
    if keep is not None:
        tree.body = [
            node
            for node in tree.body
            if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            or node.name in keep
        ]
    original = copy.deepcopy(tree.body)
    unasync = _Unasync()
    tree = unasync.visit(tree)
    if len(tree.body) != len(original):
        raise SyntaxError(f"{source}: a top-level statement was split or removed")
    body = _share_unchanged(original, tree.body, source_module)
    body = _rewrite_imports(body, source_module)
    future = [n for n in body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    modules = [ast.Import(names=[ast.alias(name=m)]) for m in sorted(unasync.modules_needed)]
    for index, node in enumerate(body):
        if node in future:
            body[index + 1 : index + 1] = modules
            break
    tree.body = body
    _rewrite_docstrings(tree)
    if doc is not None and tree.body and _is_docstring(tree.body[0]):
        tree.body[0].value.value = doc
    code = HEADER.format(source=source) + ast_comments.unparse(tree) + "\n"
    return _ruff(code, target)


def main() -> int:
    """Write (or with ``--check``, compare) every generated module."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report stale modules, write none")
    args = parser.parse_args()
    stale = []
    for target in TARGETS:
        path = PACKAGE / target.target
        text = generate(target)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(target.target)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        verb = "stale" if args.check else "written"
        print(f"{verb}: {', '.join(stale)}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())

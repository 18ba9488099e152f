"""The one loader of the SQL adapters' ``.sql`` files: migrations, the schema, named queries.

Each SQL adapter keeps its SQL in a ``sql/`` folder beside its modules:

- ``NNNN_description.sql``: versioned migrations, applied in order and recorded in the
  database's ``runstate_schema_version`` table;
- ``schema.sql``: the canonical schema the migrations must produce (a test checks that they
  agree), for review and diffing;
- ``queries.sql`` and any other ``*.sql`` of named statements: each statement starts at a
  ``-- name: <name>`` line and runs to the next one; other comment lines are dropped.

``dialect`` names the adapter: ``"sqlite"`` and ``"postgres"`` are the built-in packages under
``runstate.adapters``; a third-party adapter passes its own dotted package name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from types import MappingProxyType

_MIGRATION_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_QUERY_NAME = re.compile(r"^-- name: (?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    """One versioned step of a dialect's schema."""

    version: int
    name: str
    sql: str


def _folder(dialect: str) -> Traversable:
    package = dialect if "." in dialect else f"runstate.adapters.{dialect}"
    return resources.files(package).joinpath("sql")


@cache
def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """Return the dialect's migrations sorted by version; versions must be 1, 2, 3, ..."""
    migrations = []
    for entry in _folder(dialect).iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            migrations.append(
                Migration(
                    version=int(match["version"]),
                    name=match["name"],
                    sql=entry.read_text(encoding="utf-8"),
                )
            )
    migrations.sort(key=lambda m: m.version)
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..N: {versions}")
    return tuple(migrations)


@cache
def load_sql(dialect: str, filename: str) -> str:
    """Return one SQL file of the dialect (``schema.sql``, a migration, a query file)."""
    return _folder(dialect).joinpath(filename).read_text(encoding="utf-8")


@cache
def load_queries(dialect: str, filename: str = "queries.sql") -> Mapping[str, str]:
    """Return the named statements of a query file: name -> SQL, without comments or ``;``."""
    text = load_sql(dialect, filename)
    marks = list(_QUERY_NAME.finditer(text))
    queries: dict[str, str] = {}
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        end = following.start() if following else len(text)
        body = "\n".join(
            line
            for line in text[mark.end() : end].splitlines()
            if not line.lstrip().startswith("--")
        )
        name = mark["name"]
        if name in queries:
            raise RuntimeError(f"{dialect}/{filename}: query {name!r} is defined twice")
        queries[name] = body.strip().rstrip(";").strip()
    return MappingProxyType(queries)


def pending_migrations(dialect: str, applied_version: int) -> list[Migration]:
    """Return the migrations newer than ``applied_version``, in order."""
    return [m for m in load_migrations(dialect) if m.version > applied_version]


def latest_version(dialect: str) -> int:
    """Return the newest migration version of the dialect."""
    migrations = load_migrations(dialect)
    return migrations[-1].version if migrations else 0

"""Versioned SQL migrations shipped as package data, shared by the SQL adapters.

Each dialect folder under ``runstate/sql/`` holds ``NNNN_description.sql`` migration files,
applied in order and recorded in ``runstate_schema_version``, and ``schema.sql``: the
canonical schema that the migrations must produce (a test checks that they agree).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_MIGRATION_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    """One versioned step of a dialect's schema."""

    version: int
    name: str
    sql: str


@cache
def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """Return the dialect's migrations sorted by version; versions must be 1, 2, 3, ..."""
    folder = resources.files("runstate.sql").joinpath(dialect)
    migrations = []
    for entry in folder.iterdir():
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
    """Return a packaged SQL file of the dialect (``schema.sql``, queries, functions)."""
    return resources.files("runstate.sql").joinpath(dialect, filename).read_text(encoding="utf-8")


def pending_migrations(dialect: str, applied_version: int) -> list[Migration]:
    """Return the migrations newer than ``applied_version``, in order."""
    return [m for m in load_migrations(dialect) if m.version > applied_version]


def latest_version(dialect: str) -> int:
    """Return the newest migration version of the dialect."""
    migrations = load_migrations(dialect)
    return migrations[-1].version if migrations else 0

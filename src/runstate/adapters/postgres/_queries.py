"""The adapter's named SQL statements, loaded once from ``sql/queries.sql``."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from types import MappingProxyType

from .._sql import load_queries
from ._config import quote_ident

DIALECT = "postgres"
#: Statement name -> SQL text with its ``{schema}`` placeholders; every value is bound.
Q = load_queries(DIALECT)


@cache
def schema_queries(schema: str) -> Mapping[str, str]:
    """Every named statement with ``{schema}`` filled with the validated, quoted ``schema``.

    Every table and function is named through the placeholder, so no statement depends on
    a connection's search_path.
    """
    quoted = quote_ident(schema)
    return MappingProxyType({name: sql.replace("{schema}", quoted) for name, sql in Q.items()})

"""The adapter's named SQL statements, loaded once from ``sql/queries.sql``."""

from __future__ import annotations

from .._sql import load_queries

DIALECT = "postgres"
#: Statement name -> SQL text; every value in them is a bound parameter.
Q = load_queries(DIALECT)

"""The ``runstate+http://`` / ``runstate+https://`` store: a runstate server's HTTP API.

Needs httpx (the ``http``, ``server`` or ``webhook`` extra).
"""

from ...wire.problems import AccessDenied
from ._store import TOKEN_ENV_VAR, HttpStore, open_http_store

__all__ = ["TOKEN_ENV_VAR", "AccessDenied", "HttpStore", "open_http_store"]

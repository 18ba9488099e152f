"""The ``runstate+http://`` / ``runstate+https://`` store: a runstate server's HTTP API.

Needs httpx (the ``http``, ``server`` or ``webhook`` extra).
"""

from ...wire.problems import AccessDenied
from ._open import open_http_store
from ._store import TOKEN_ENV_VAR, HttpStore

__all__ = ["TOKEN_ENV_VAR", "AccessDenied", "HttpStore", "open_http_store"]

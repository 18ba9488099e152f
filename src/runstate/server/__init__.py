"""The runstate HTTP API: an ASGI app over any store, served by ``runstate serve``.

Needs the ``server`` extra (Starlette, uvicorn). ``create_app(open_store, tokens=...)`` builds
the app; ``serve`` runs it with uvicorn; ``ServerThread`` runs it in a background thread (tests,
benchmarks, embedding).
"""

from ._app import ApiApp, create_app
from ._auth import TOKENS_ENV_VAR, Scope, Token, is_loopback_host, load_tokens, parse_token_lines
from ._thread import ServerThread

__all__ = [
    "TOKENS_ENV_VAR",
    "ApiApp",
    "Scope",
    "ServerThread",
    "Token",
    "create_app",
    "is_loopback_host",
    "load_tokens",
    "parse_token_lines",
]

"""Test helpers: a runstate server on a free loopback port, serving one store URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from runstate import RunStateStore, open_store
from runstate.server import ServerThread, Token, create_app


def store_url_of(server: ServerThread) -> str:
    """The ``runstate+http://`` URL of a running server."""
    return server.url.replace("http://", "runstate+http://", 1)


@contextmanager
def serving(
    url: str, *, tokens: tuple[Token, ...] = (), access_log: bool = False, **options: Any
) -> Iterator[ServerThread]:
    """Serve the store at ``url`` (opened with ``options``) until the block ends."""

    async def opener() -> RunStateStore:
        return await open_store(url, **options)

    app = create_app(opener, tokens=tokens, stream_heartbeat_seconds=0.5)
    with ServerThread(
        app, access_log=access_log, log_level="info" if access_log else "warning"
    ) as server:
        yield server

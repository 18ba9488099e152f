"""A TCP proxy for fault injection: cut and restore a broker or database link at will.

``TcpProxy(host, port)`` listens on a free local port and forwards every connection to the
target. ``cut()`` closes every live connection and stops listening (new connections are
refused, as when the broker is down); ``restore()`` listens again on the same port. A
``ServerFilter`` sees each chunk the target sends and may forward it, or swallow it and
drop the connection, to lose a reply on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any


class Link:
    """One proxied connection; filters may keep their own state in ``state``."""

    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.state: dict[str, Any] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for writer in (self.client, self.server):
            writer.transport.abort()


#: Called with each chunk from the client; may inspect and record state on the link.
ClientFilter = Callable[[Link, bytes], None]
#: Called with each chunk from the target; returns the bytes to forward, or ``None`` to
#: swallow them and drop the connection.
ServerFilter = Callable[[Link, bytes], bytes | None]


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``host:port``, with cut/restore and reply filters."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.links: set[Link] = set()
        self.connections = 0
        self.client_filter: ClientFilter | None = None
        self.server_filter: ServerFilter | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen (on a fresh port the first time, the same port after ``cut``)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def cut(self) -> None:
        """Refuse new connections and abort every live one."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self._abort_links()

    async def restore(self) -> None:
        """Accept connections again, on the same port."""
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        await self.cut()

    async def _abort_links(self) -> None:
        links, self.links = list(self.links), set()
        for link in links:
            link.abort()
        for link in links:
            for task in link.tasks:
                task.cancel()
            await asyncio.gather(*link.tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        link = Link(writer, up_writer)
        self.links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, up_writer, upstream=True)),
            asyncio.create_task(self._pump(link, up_reader, writer, upstream=False)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        self.links.discard(link)
        link.abort()

    async def _pump(
        self,
        link: Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if upstream:
                    if self.client_filter is not None:
                        self.client_filter(link, data)
                elif self.server_filter is not None:
                    forwarded = self.server_filter(link, data)
                    if forwarded is None:
                        link.abort()
                        return
                    data = forwarded
                if data:
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # One side ended: end the other, as a real broken link does.
            with contextlib.suppress(Exception):
                link.abort()

"""Running the API with uvicorn: in the foreground (the CLI) or in a background thread."""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from ..errors import StoreUnavailable

_STARTUP_TIMEOUT_SECONDS = 30.0


def uvicorn_config(
    app: Any, *, host: str, port: int, access_log: bool, log_level: str = "info"
) -> uvicorn.Config:
    """The uvicorn settings runstate serves with: httptools, no websockets, our lifespan."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools",
        ws="none",
        lifespan="on",
        access_log=access_log,
        log_level=log_level,
        server_header=False,
        # Forwarded headers are not trusted: the access log shows the peer's address.
        proxy_headers=False,
        # The store's loop: a write's latency is a thread hop plus the commit, so uvloop's
        # cheaper callbacks matter; uvicorn falls back to asyncio where uvloop is missing.
        loop="auto",
        timeout_graceful_shutdown=5,
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class ServerThread:
    """Serve an app on a free loopback port from a background thread.

    ``with ServerThread(app) as server: server.url`` — the store opens on the thread's own
    event loop when the server starts and closes when it stops.
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_log: bool = False,
        log_level: str = "warning",
    ) -> None:
        self._socket = bind_socket(host, port)
        bound_port = self._socket.getsockname()[1]
        config = uvicorn_config(
            app, host=host, port=bound_port, access_log=access_log, log_level=log_level
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, name=f"runstate-server-{bound_port}", daemon=True
        )
        self.url = f"http://{host}:{bound_port}"
        self._failure: BaseException | None = None

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # surfaced to the starting thread
            self._failure = exc

    def start(self) -> ServerThread:
        """Start serving; return once the server accepts requests."""
        self._thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._socket.close()
                reason = self._failure or "the store did not open (see the log)"
                raise StoreUnavailable(f"the server did not start: {reason}", retryable=False)
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread (the store is closed by the app's shutdown)."""
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()
        if self._thread.is_alive():  # pragma: no cover - shutdown is bounded by uvicorn
            logging.getLogger("runstate.server").warning("server thread did not stop in time")

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

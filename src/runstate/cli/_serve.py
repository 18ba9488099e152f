"""``runstate serve``: the HTTP API over a store, with uvicorn."""

from __future__ import annotations

import asyncio
import sys

import typer

from .. import mask_url, open_store
from ..errors import RunStateError
from ..store import RunStateStore
from ._common import EXIT_INVALID_INPUT, UrlOption, exit_code_for, fail


async def _check_store(url: str) -> None:
    """Open and close the store once, so a bad URL is one line here, not a server log."""
    async with open_store(url):
        pass


def serve_command(
    url: str = UrlOption,
    host: str = typer.Option("127.0.0.1", help="Address to bind (non-loopback needs tokens)."),
    port: int = typer.Option(8080, min=0, max=65535, help="TCP port."),
    tokens: str | None = typer.Option(
        None,
        "--tokens",
        help="File of 'SCOPE TOKEN' lines (read, write, admin; # comments); "
        "default: $RUNSTATE_API_TOKENS.",
    ),
    max_body_bytes: int = typer.Option(
        8 * 1024 * 1024, min=1024, help="Largest request body accepted (413 above)."
    ),
    access_log: bool = typer.Option(True, help="Log one line per request (never tokens)."),
) -> None:
    """Serve the store as an HTTP API (OpenAPI at /openapi.json) and the web view at /."""
    try:
        from ..server import create_app, is_loopback_host, load_tokens
        from ..server._thread import uvicorn_config
    except ImportError as exc:
        raise fail(
            f"the server needs the 'server' extra: pip install 'runstate[server]' ({exc.name})"
        ) from None
    import uvicorn

    try:
        loaded = load_tokens(tokens)
        if not loaded and not is_loopback_host(host):
            raise fail(
                f"refusing to serve on {host} without tokens: pass --tokens FILE or set "
                "$RUNSTATE_API_TOKENS (without tokens only loopback addresses are served)",
                EXIT_INVALID_INPUT,
            )
        asyncio.run(_check_store(url))
    except RunStateError as exc:
        raise fail(f"{exc} ({exc.code})", exit_code_for(exc)) from None

    async def opener() -> RunStateStore:
        return await open_store(url)

    app = create_app(opener, tokens=loaded, max_body_bytes=max_body_bytes)
    shown_host = f"[{host}]" if ":" in host else host
    print(
        f"runstate: serving {mask_url(url)} on http://{shown_host}:{port} "
        f"({app.context.access.describe()}); web view at /, OpenAPI at /openapi.json",
        file=sys.stderr,
        flush=True,
    )
    server = uvicorn.Server(uvicorn_config(app, host=host, port=port, access_log=access_log))
    server.run()
    if not server.started:
        raise fail(f"could not serve on {shown_host}:{port} (see the log above)")

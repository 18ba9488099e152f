"""``run_relay``: the relay as a process, from a store URL and a sink URL, with signals."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from .._open import open_store
from .._url import mask_url
from ..errors import InvalidInput
from ..sinks import create_sink
from ..store import OutboxStore
from .delivery import Relay, RelayReport

logger = logging.getLogger("runstate.relay")


async def run_relay(
    store_url: str,
    sink_url: str,
    *,
    once: bool = False,
    workers: int = 1,
    batch_size: int = 100,
    lease_seconds: float = 30.0,
    max_attempts: int = 10,
    backoff_base: float = 1.0,
    backoff_max: float = 300.0,
    poll_interval: float = 1.0,
    sink_options: dict[str, Any] | None = None,
    store_options: dict[str, Any] | None = None,
    handle_signals: bool = True,
    retention: timedelta | None = None,
    on_start: Callable[[Relay], None] | None = None,
    source: str | None = None,
) -> RelayReport:
    """Open the store and sink, relay (until drained with ``once``, else until SIGTERM/SIGINT).

    The first SIGTERM or SIGINT stops gracefully: the batch in flight is finished and leases
    are released. A second one cancels at once (leases are still released). ``on_start`` is
    called with the relay once the store and the sink are open, before it delivers anything
    (``relay.stop()`` then stops it gracefully, as SIGTERM does). ``source`` is the
    CloudEvents source (default: the sink URL's ``source`` option, else ``runstate://<store
    id>``).
    """
    sink = create_sink(sink_url, **(sink_options or {}))
    async with open_store(store_url, **(store_options or {})) as store:
        if not isinstance(store, OutboxStore):
            raise InvalidInput(
                f"store {mask_url(store_url, store_url)!r} has no outbox", field="store_url"
            )
        relay = Relay(
            store,
            sink,
            workers=workers,
            batch_size=batch_size,
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            poll_interval=poll_interval,
            retention=retention,
            source=source,
        )
        await sink.open()
        try:
            if on_start is not None:
                on_start(relay)
            if once:
                await relay.purge_once()
            main = asyncio.ensure_future(relay.run_once() if once else relay.run_forever())
            installed = _install_signal_handlers(relay, main) if handle_signals else []
            try:
                return await main
            finally:
                loop = asyncio.get_running_loop()
                for sig in installed:
                    loop.remove_signal_handler(sig)
        finally:
            await sink.close()


def _install_signal_handlers(relay: Relay, main: asyncio.Future[Any]) -> list[signal.Signals]:
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if relay.stopping:
            logger.warning("relay: second %s, cancelling", sig.name)
            main.cancel()
        else:
            logger.info("relay: %s received, finishing the batch in flight", sig.name)
            relay.stop()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            # Windows or not the main thread: the caller handles signals itself.
            continue
        installed.append(sig)
    return installed

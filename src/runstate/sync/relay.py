"""``RelayThread``: the outbox relay in a background thread of a synchronous program.

The relay stays what ``runstate relay`` runs (``runstate.relay.run_relay``): this only gives
it a thread and an event loop of its own, and a clean way to stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Any

from ..relay import Relay, RelayReport, run_relay


class RelayThread:
    """Runs ``run_relay(store_url, sink_url, **options)`` in a daemon thread.

    ``start()`` returns once the store and the sink are open (or raises why they could not
    be); ``stop()`` stops it gracefully, as SIGTERM stops ``runstate relay`` (the batch in
    flight is finished, leases are released), and returns its ``RelayReport``. As a context
    manager it starts on entry and stops on exit. With ``once=True`` the relay ends by itself
    when everything pending is delivered; ``join()`` waits for that.
    """

    def __init__(
        self, store_url: str, sink_url: str, *, name: str = "runstate-relay", **options: Any
    ) -> None:
        if "handle_signals" in options or "on_start" in options:
            raise TypeError("RelayThread handles signals and start-up itself")
        self.store_url = store_url
        self.sink_url = sink_url
        self.options = options
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._relay: Relay | None = None
        self._report: RelayReport | None = None
        self._error: BaseException | None = None

    @property
    def report(self) -> RelayReport | None:
        """What the relay did, once it ended; ``None`` while it runs."""
        return self._report

    @property
    def running(self) -> bool:
        """Whether the relay's thread is alive."""
        return self._thread.is_alive()

    def start(self) -> None:
        """Start the thread; return once the relay runs, or raise why it could not start."""
        self._thread.start()
        self._started.wait()
        if self._relay is None:
            self._thread.join()
            self._raise_error()

    def stop(self, timeout: float | None = 30.0) -> RelayReport:
        """Stop the relay gracefully and wait for its thread; return its report."""
        loop, relay = self._loop, self._relay
        if loop is not None and relay is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(relay.stop)
        return self.join(timeout)

    def join(self, timeout: float | None = None) -> RelayReport:
        """Wait for the relay to end; return its report, or raise what ended it."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the relay did not stop within {timeout} seconds")
        self._raise_error()
        assert self._report is not None
        return self._report

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> RelayThread:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            asyncio.run(self._relay_until_stopped())
        except BaseException as exc:  # reported to whoever starts, stops or joins
            self._error = exc
        finally:
            self._started.set()

    async def _relay_until_stopped(self) -> None:
        self._loop = asyncio.get_running_loop()

        def started(relay: Relay) -> None:
            self._relay = relay
            self._started.set()

        self._report = await run_relay(
            self.store_url,
            self.sink_url,
            handle_signals=False,
            on_start=started,
            **self.options,
        )

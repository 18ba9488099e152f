"""JSON lines sinks: an append-only file fsynced per batch, and standard output."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from ..errors import InvalidInput
from ..types import OutboxRecord
from .base import BaseSink, DeliveryOutcome, sink_options
from .cloudevents import check_source, encode_cloudevent

logger = logging.getLogger("runstate.relay.sinks.files")


class FileSink(BaseSink):
    """Append one CloudEvent per line to a file; every batch is flushed and fsynced."""

    def __init__(
        self, path: str | os.PathLike[str], *, fsync: bool = True, source: str | None = None
    ) -> None:
        self.path = Path(path)
        self.source = check_source(source)
        self._fsync = fsync
        self._file: IO[bytes] | None = None
        self.name = f"file://{self.path}"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> FileSink:
        """Build from ``file:///absolute/path.jsonl`` (``file://./relative.jsonl`` also works)."""
        base, merged = sink_options(url, options, {"fsync", "source"})
        parts = urlsplit(base)
        path = unquote(parts.netloc + parts.path)
        if not path:
            raise InvalidInput("file:// sink needs a path, e.g. file:///var/log/runs.jsonl")
        fsync = str(merged.get("fsync", "true")).lower() not in {"0", "false", "no"}
        return cls(path, fsync=fsync, source=merged.get("source"))

    async def open(self) -> None:
        """Open the file for appending; a failure is logged and retried on the next batch."""
        try:
            await self._ensure_open()
        except OSError as exc:
            logger.warning("file sink %s not ready yet: %s", self.name, self.describe(exc))

    async def _ensure_open(self) -> None:
        if self._file is None:
            self._file = await asyncio.to_thread(self._open_file)

    def _open_file(self) -> IO[bytes]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.path.open("ab")

    async def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            file, self._file = self._file, None
            await asyncio.to_thread(file.close)

    async def publish(self, batch: Sequence[OutboxRecord]) -> list[DeliveryOutcome]:
        """Append the batch and make it durable before reporting it delivered."""
        data = b"".join(encode_cloudevent(record, self.event_source) + b"\n" for record in batch)
        try:
            await self._ensure_open()
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            # The file may be broken (disk full, unlinked mount): reopen on the next batch.
            await self._discard()
            return self.all_retry(batch, exc)
        return [DeliveryOutcome.delivered(record) for record in batch]

    def _write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    async def _discard(self) -> None:
        try:
            await self.close()
        except OSError:
            self._file = None


class StdoutSink(BaseSink):
    """Write one CloudEvent per line to standard output (for piping and debugging)."""

    name = "stdout://"

    def __init__(self, *, source: str | None = None) -> None:
        self.source = check_source(source)

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> StdoutSink:
        """Build from ``stdout://`` (``stdout://?source=...`` sets the CloudEvents source)."""
        _, merged = sink_options(url, options, {"source"})
        return cls(source=merged.get("source"))

    async def publish(self, batch: Sequence[OutboxRecord]) -> list[DeliveryOutcome]:
        """Print the batch, one JSON object per line, and flush."""
        text = "".join(
            encode_cloudevent(record, self.event_source).decode() + "\n" for record in batch
        )
        try:
            # Looked up per call so redirections made after the sink was built are honoured.
            sys.stdout.write(text)
            sys.stdout.flush()
        except OSError as exc:
            return self.all_retry(batch, exc)
        return [DeliveryOutcome.delivered(record) for record in batch]

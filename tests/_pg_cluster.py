"""Private PostgreSQL servers for tests that stop, restart or fail over a whole server.

A lone server (the restart test) or a primary with a streaming standby (the failover tests)
runs from a temporary folder on free loopback ports, made with the server binaries
(``initdb``, ``pg_basebackup -R``, ``pg_ctl``), as the ``postgres`` user when the tests run as
root (the server refuses root). The pair's replication is synchronous
(``synchronous_standby_names``), so every commit the primary acknowledges is on the standby
too. The shared server on 5432 is never touched; everything here is stopped by its own data
folder in a finaliser.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from _processes import free_port
from conftest import IN_CI

#: Where Debian installs the server binaries; the newest version present is used.
_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_STANDBY_NAME = "rs_standby"
_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{folder}'
max_connections = 60
shared_buffers = 16MB
fsync = off
full_page_writes = off
wal_level = replica
max_wal_senders = 4
wal_keep_size = 64MB
hot_standby = on
hot_standby_feedback = on
synchronous_commit = on
synchronous_standby_names = '{standby}'
wal_receiver_status_interval = 1
logging_collector = off
"""


_LONE_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{folder}'
fsync = off
logging_collector = off
"""


def find_server_binaries() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``/``pg_basebackup``, or ``None`` if not installed."""
    folders = sorted(glob.glob(_BIN_GLOB), key=lambda p: int(Path(p).parent.name), reverse=True)
    for folder in folders:
        if os.access(os.path.join(folder, "initdb"), os.X_OK):
            return Path(folder)
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class Server:
    """One server of the pair: its data folder and port."""

    data: Path
    port: int

    @property
    def url(self) -> str:
        """The URL of its ``postgres`` database as user ``postgres``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


class _Servers:
    """Servers in one folder, run by the server binaries; ``stop_all`` stops what still runs."""

    def __init__(self, binaries: Path, folder: Path) -> None:
        self._bin = binaries
        self._folder = folder
        self._running: set[Path] = set()

    def _run(self, *command: str, timeout: float = 60) -> None:
        argv = [str(self._bin / command[0]), *command[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"{command[0]} failed ({done.returncode}): {output[-2000:]}")

    def _start(self, server: Server) -> None:
        self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(server.data), "-l", self._log(server)
        )
        self._running.add(server.data)

    def _log(self, server: Server) -> str:
        return str(self._folder / f"{server.data.name}.log")

    def _initdb(self, server: Server, settings: str) -> None:
        self._run("initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")  # fmt: skip
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write(settings)

    def stop_all(self) -> None:
        """Stop whatever still runs; never raises."""
        for data in list(self._running):
            with contextlib.suppress(Exception):
                self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(data))
            self._running.discard(data)


class LoneServer(_Servers):
    """One server of the test's own; ``restart`` takes it down and up on the same port."""

    def __init__(self, binaries: Path, folder: Path) -> None:
        super().__init__(binaries, folder)
        self.server = Server(data=folder / "data", port=free_port())

    @property
    def url(self) -> str:
        """The URL of its ``postgres`` database as user ``postgres``."""
        return self.server.url

    def start(self) -> None:
        """initdb the server and start it."""
        self._initdb(self.server, _LONE_SETTINGS.format(port=self.server.port, folder=self._folder))
        self._start(self.server)

    def restart(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` ends sessions) and start it again; wait until it is up."""
        data = str(self.server.data)
        self._run(
            "pg_ctl",
            "restart",
            "-w",
            "-t",
            "60",
            "-m",
            mode,
            "-D",
            data,
            "-l",
            self._log(self.server),
        )


class ServerPair(_Servers):
    """A primary and its synchronous standby; ``stop_primary`` and ``promote`` fail over."""

    def __init__(self, binaries: Path, folder: Path) -> None:
        super().__init__(binaries, folder)
        self.primary = Server(data=folder / "primary", port=free_port())
        self.standby = Server(data=folder / "standby", port=free_port())

    def start(self) -> None:
        """initdb the primary, start it, clone the standby with ``pg_basebackup -R``, start it."""
        settings = _SETTINGS.format(
            port=self.primary.port, folder=self._folder, standby=_STANDBY_NAME
        )
        self._initdb(self.primary, settings)
        with (self.primary.data / "pg_hba.conf").open("a") as hba:
            hba.write("host replication postgres 127.0.0.1/32 trust\n")
        self._start(self.primary)
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary.port),
                  "-U", "postgres", "-D", str(self.standby.data), "-R", "-X", "stream",
                  "--no-sync", "-c", "fast",
                  "-d", f"application_name={_STANDBY_NAME}")  # fmt: skip
        with (self.standby.data / "postgresql.conf").open("a") as conf:
            # Promoted, it has no standby of its own: were it to keep the primary's
            # synchronous_standby_names, every commit would wait for one forever.
            conf.write(f"port = {self.standby.port}\nsynchronous_standby_names = ''\n")
        self._start(self.standby)

    def stop_primary(self, mode: str = "immediate") -> None:
        """Stop the primary (``immediate``: as a crash would, nothing flushed or said)."""
        self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.primary.data))
        self._running.discard(self.primary.data)

    def stop_standby(self) -> None:
        """Stop the standby (fast: its connections are told and closed)."""
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.standby.data))
        self._running.discard(self.standby.data)

    def promote(self) -> None:
        """Promote the standby and wait until it accepts writes."""
        self._run("pg_ctl", "promote", "-w", "-t", "60", "-D", str(self.standby.data))


@contextlib.contextmanager
def _private_folder(prefix: str) -> Iterator[Path]:
    """A temporary folder the ``postgres`` user owns (under root); deleted afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def require_server_binaries() -> None:
    """Skip the test without the server binaries; under CI fail it (a missing tool)."""
    if find_server_binaries() is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: a missing tool is a failure)")
        pytest.skip(message)


def _binaries() -> Path:
    binaries = find_server_binaries()
    if binaries is None:
        raise FileNotFoundError("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return binaries


@contextlib.contextmanager
def running_pair() -> Iterator[ServerPair]:
    """Run a primary and a synchronous standby in a temporary folder; stop and delete them."""
    with _private_folder("rs-pg-pair-") as folder:
        pair = ServerPair(_binaries(), folder)
        try:
            pair.start()
            yield pair
        finally:
            pair.stop_all()


@contextlib.contextmanager
def running_server() -> Iterator[LoneServer]:
    """Run one server in a temporary folder; stop and delete it."""
    with _private_folder("rs-pg-") as folder:
        server = LoneServer(_binaries(), folder)
        try:
            server.start()
            yield server
        finally:
            server.stop_all()

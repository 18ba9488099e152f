"""A private pgbouncer for the tests: its own config, folder and free port, stopped by PID.

It forwards every database to the test server on 127.0.0.1:5432 and refuses every startup
parameter it does not know (``ignore_startup_parameters`` is empty), as a default pgbouncer
does: a client that sends ``search_path`` at connect time fails here as it would in
production. Run as root, it switches to the ``postgres`` user (pgbouncer refuses root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_CONFIG = """\
[databases]
* = host=127.0.0.1 port={target_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder}/users.txt
pool_mode = {mode}
default_pool_size = {pool_size}
max_client_conn = 2000
ignore_startup_parameters =
log_connections = 0
log_disconnections = 0
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
"""


def find_pgbouncer() -> str | None:
    """The pgbouncer executable (Debian installs it in /usr/sbin), or ``None``."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _start(
    binary: str, folder: Path, mode: str, pool_size: int, target_port: int
) -> tuple[subprocess.Popen[bytes], int]:
    command = [binary]
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
        command += ["-u", "postgres"]
    for _ in range(5):  # another process may take the free port first: pick again
        port = _free_port()
        config = folder / "pgbouncer.ini"
        config.write_text(
            _CONFIG.format(
                port=port, folder=folder, mode=mode, pool_size=pool_size, target_port=target_port
            )
        )
        process = subprocess.Popen(
            [*command, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if _listening(port):
                return process, port
            time.sleep(0.05)
        _stop(process)
    log = folder / "pgbouncer.log"
    raise RuntimeError(f"pgbouncer did not start: {log.read_text() if log.exists() else '?'}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_pgbouncer(
    mode: str = "transaction", *, pool_size: int = 20, target_port: int = 5432
) -> Iterator[str]:
    """Run a pgbouncer in ``mode`` (transaction or session) with at most ``pool_size`` server
    connections; yield its URL for the database ``test``."""
    binary = find_pgbouncer()
    if binary is None:
        raise FileNotFoundError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    folder = Path(tempfile.mkdtemp(prefix="rs-pgbouncer-"))
    (folder / "users.txt").write_text('"postgres" ""\n"root" ""\n')
    process, port = _start(binary, folder, mode, pool_size, target_port)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/test"
    finally:
        _stop(process)
        shutil.rmtree(folder, ignore_errors=True)

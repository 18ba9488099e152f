"""Real processes for the scale-out tests: `runstate relay` processes and a NATS cluster.

Every server listens on free loopback ports chosen at run time, keeps its files in a temp
directory, and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUNSTATE = [sys.executable, "-m", "runstate.cli"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (bind port 0, read it, close)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def stop_pid(process: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    """Send ``sig`` to the process (by its PID), wait for it, SIGKILL it if it hangs."""
    if process.poll() is None:
        os.kill(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
    return process.returncode


@dataclass(kw_only=True)
class RelayProcess:
    """One `runstate relay --json` process; its log goes to ``log``."""

    process: subprocess.Popen[str]
    log: Path

    def report(self, sig: int = signal.SIGTERM) -> dict[str, Any]:
        """Stop it with ``sig`` and return the JSON report it prints on the way out."""
        code = stop_pid(self.process, sig)
        assert self.process.stdout is not None
        with self.process.stdout:
            out = self.process.stdout.read()
        assert code == 0, f"relay exited {code}: {out}\n{self.log.read_text()[-3000:]}"
        report: dict[str, Any] = json.loads(out)
        return report

    def kill(self) -> None:
        """SIGKILL it: no chance to hand its leases back."""
        stop_pid(self.process, signal.SIGKILL)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_relay(store_url: str, sink_url: str, log: Path, *args: str) -> RelayProcess:
    """Start `runstate relay` on ``store_url`` delivering to ``sink_url``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as err:
        process = subprocess.Popen(
            [*RUNSTATE, "relay", "--url", store_url, "--sink", sink_url, "--json", *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
    return RelayProcess(process=process, log=log)


@dataclass(kw_only=True)
class NatsNode:
    """One nats-server of the cluster: its ports, store dir, and process while it runs."""

    name: str
    port: int
    cluster_port: int
    monitor_port: int
    store_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass(kw_only=True)
class NatsCluster:
    """Three (or more) JetStream servers routed to each other on loopback."""

    binary: str
    cluster_name: str
    nodes: list[NatsNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The servers as the NATS sink takes them: ``nats://h:p,h:p,h:p``."""
        return "nats://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, node: NatsNode) -> None:
        """Start (or restart, on the same store dir) one node and wait for its client port."""
        routes = ",".join(
            f"nats://127.0.0.1:{other.cluster_port}" for other in self.nodes if other is not node
        )
        command = [
            self.binary,
            *("-a", "127.0.0.1", "-p", str(node.port), "-n", node.name),
            *("-js", "-sd", str(node.store_dir), "--cluster_name", self.cluster_name),
            *("--cluster", f"nats://127.0.0.1:{node.cluster_port}", "--routes", routes),
            *("-m", str(node.monitor_port), "-l", str(node.log)),
        ]
        node.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while not port_open(node.port):
            if node.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server {node.name} did not start: {self.tail(node)}")
            time.sleep(0.05)

    def kill(self, node: NatsNode) -> None:
        """SIGKILL one node: no shutdown, no leadership hand-over."""
        if node.process is not None:
            stop_pid(node.process, signal.SIGKILL)
            node.process = None

    def stop_all(self) -> None:
        """Stop every node that still runs, by PID."""
        for node in self.nodes:
            if node.process is not None:
                stop_pid(node.process, signal.SIGTERM, timeout=10)
                node.process = None

    def client_names(self, node: NatsNode) -> list[str]:
        """The names of the clients connected to ``node`` (from its monitoring port)."""
        url = f"http://127.0.0.1:{node.monitor_port}/connz"
        with urllib.request.urlopen(url, timeout=5) as response:
            connz = json.load(response)
        return [str(c.get("name", "")) for c in connz.get("connections") or []]

    def node_named(self, name: str) -> NatsNode:
        """The node whose server name is ``name``."""
        return next(node for node in self.nodes if node.name == name)

    @staticmethod
    def tail(node: NatsNode) -> str:
        """The end of a node's log, for failure messages."""
        return node.log.read_text()[-2000:] if node.log.exists() else ""


def find_nats_server() -> str | None:
    """The nats-server binary, on PATH or where Debian's package puts it."""
    found = shutil.which("nats-server")
    if found:
        return found
    return "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None


@contextlib.contextmanager
def nats_cluster(binary: str, root: Path, size: int = 3) -> Iterator[NatsCluster]:
    """Start a ``size``-node JetStream cluster under ``root``; stop it by PID on exit."""
    cluster = NatsCluster(binary=binary, cluster_name=f"rs-{os.getpid()}-{free_port()}")
    for index in range(1, size + 1):
        store = root / f"n{index}"
        store.mkdir()
        cluster.nodes.append(
            NatsNode(
                name=f"n{index}",
                port=free_port(),
                cluster_port=free_port(),
                monitor_port=free_port(),
                store_dir=store,
                log=root / f"n{index}.log",
            )
        )
    try:
        for node in cluster.nodes:
            cluster.start(node)
        yield cluster
    finally:
        cluster.stop_all()

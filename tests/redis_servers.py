"""Real ``redis-server`` processes for the store tests: one standalone server or a 3-master cluster.

Ports come from the kernel (bind 127.0.0.1:0, read, close) rather than a fixed range, so parallel runs
and the machine's own Redis on 6379 are never touched. Everything here is synchronous and bounded:
it runs in session fixtures, before any event loop exists.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import coredis
import pytest

__all__ = ["RedisClusterProcess", "RedisServerProcess", "coredis_outage", "find_redis_binaries", "free_port"]

#: coredis 6.9 builds a connection's memory streams before connecting and closes them only once
#: connected, so every failed connect leaves streams that warn when garbage-collected. Tests that
#: take Redis down carry this mark and ``gc.collect()`` before it ends (``disposable_redis`` does).
coredis_outage = pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")

_START_TIMEOUT = 10.0
_CLUSTER_TIMEOUT = 20.0
_POLL_INTERVAL = 0.02


def find_redis_binaries() -> tuple[str, str]:
    """``(redis-server, redis-cli)`` from PATH; skip the test without them, fail on CI."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        message = "redis-server not found on PATH: install Redis to run these tests"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return server, cli


def free_port(*, cluster_bus: bool = False) -> int:
    """A loopback port nobody listens on now; with ``cluster_bus`` the port + 10000 is free too."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port == 6379:
            continue
        if not cluster_bus:
            return port
        if port + 10000 <= 65535 and _port_is_free(port + 10000):
            return port
    raise RuntimeError("no free loopback port found")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """One inline-protocol command over a raw socket: no client library needed to babysit servers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(" ".join(args).encode() + b"\r\n")
        reply = sock.recv(65536)
        if reply.startswith(b"$"):  # bulk string: read until the announced length arrived
            header, _, rest = reply.partition(b"\r\n")
            need = int(header[1:]) + 2
            while len(rest) < need:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            return rest[:-2]
        return reply


class RedisServerProcess:
    """One ``redis-server`` on 127.0.0.1, persistence off, in its own temporary directory."""

    def __init__(self, directory: Path, *, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        self.directory = directory
        self.port = port if port is not None else free_port()
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start and wait (bounded) until the server answers PING."""
        server, _ = find_redis_binaries()
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.directory), "--logfile", str(self.directory / "redis.log"), *self.extra_args]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited: {self._log_tail()}")
            try:
                if _command(self.port, "PING").startswith(b"+PONG"):
                    return
            except OSError:
                pass
            time.sleep(_POLL_INTERVAL)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING in {_START_TIMEOUT}s")

    def stop(self) -> None:
        """Kill the server (SIGKILL: an outage, not a graceful shutdown) and reap it."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused process dies of SIGKILL too, but be explicit
            process.kill()
            process.wait(timeout=_START_TIMEOUT)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets open but answers nothing, like a hung host."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`; queued requests are answered in order."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Kill and start again on the same port: clients see an outage, then an empty server."""
        self.stop()
        self.start()

    def command(self, *args: str) -> bytes:
        """Run one command on this server (test assertions and setup)."""
        return _command(self.port, *args)

    def _log_tail(self) -> str:
        try:
            return (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


class RedisClusterProcess:
    """Three cluster-enabled masters, no replicas, every slot assigned."""

    def __init__(self, directory: Path, *, masters: int = 3) -> None:
        self.nodes = [
            RedisServerProcess(
                directory / f"node{index}",
                port=free_port(cluster_bus=True),
                extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            )
            for index in range(masters)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.nodes]

    def start(self) -> None:
        """Start every node, join them with ``redis-cli --cluster create``, wait for cluster_state:ok."""
        _, cli = find_redis_binaries()
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=_CLUSTER_TIMEOUT,
            )
            self._wait_ok()
        except BaseException:
            self.stop()
            raise

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + _CLUSTER_TIMEOUT
        while time.monotonic() < deadline:
            if all(b"cluster_state:ok" in node.command("CLUSTER", "INFO") for node in self.nodes):
                return
            time.sleep(_POLL_INTERVAL * 5)
        raise RuntimeError(f"cluster did not reach cluster_state:ok in {_CLUSTER_TIMEOUT}s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    @contextlib.asynccontextmanager
    async def client(self, **options: Any) -> AsyncIterator[coredis.RedisCluster[bytes]]:
        """An open ``coredis.RedisCluster`` on this cluster.

        coredis 6.9 never closes the cluster layout's error stream, which then warns when collected
        (an error under ``-W error``, in whatever test runs at the time); close it here.
        """
        client: coredis.RedisCluster[bytes] = coredis.RedisCluster("127.0.0.1", self.nodes[0].port, **options)
        try:
            async with client:
                yield client
        finally:
            layout = getattr(client.connection_pool, "cluster_layout", None)
            for stream in getattr(layout, "_error_stream", ()):
                stream.close()

    def command_all(self, *args: str) -> Iterator[bytes]:
        """Run one command on every master (e.g. FLUSHALL between tests)."""
        for node in self.nodes:
            yield node.command(*args)

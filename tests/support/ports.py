"""Ports for the servers the tests start: ipyparallel controllers, nats-server, SecantusDB.

Each picks free ports, then its server binds them a moment later (a NATS node killed and
restarted binds them again much later). Among the ephemeral ports (Linux: 32768-60999) the
suite's own connections to its servers take their source ports, and one took a controller
scheduler's port in between (CI, issue 24's stop: "Address already in use", the scheduler dead,
the engines never reached). Below that range only listeners bind, and each takes a random block
there that was free a moment before.
"""

from __future__ import annotations

import random
import socket

__all__ = ["listen_ports", "controller_ports"]

_LOWEST, _HIGHEST = 20_000, 32_000  # below the ephemeral range, above the well-known services
_CONTROLLER = 32  # a controller binds 16 ports by default (more with deeper broadcast schedulers)


def listen_ports(n: int) -> list[int]:
    """``n`` consecutive loopback ports below the ephemeral range, free now."""
    for _ in range(200):
        first = random.randrange(_LOWEST, _HIGHEST - n)
        if all(map(_free, range(first, first + n))):
            return list(range(first, first + n))
    raise RuntimeError(f"no {n} consecutive free ports in {_LOWEST}-{_HIGHEST}")


def controller_ports() -> str:
    """``--IPController.ports=first-last``: the pool an ipyparallel controller binds from."""
    ports = listen_ports(_CONTROLLER)
    return f"--IPController.ports={ports[0]}-{ports[-1]}"


def _free(port: int) -> bool:
    """Whether nothing is bound to ``port`` on loopback."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True

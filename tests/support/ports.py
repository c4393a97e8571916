"""Ports for the ipyparallel controllers the tests start.

A controller picks free ports, then its schedulers bind them a moment later. Among the ephemeral
ports (Linux: 32768-60999) the suite's own connections to its servers take their source ports,
and one took a scheduler's port in between (CI, issue 24's stop: "Address already in use", the
scheduler dead, the engines never reached). Below that range only listeners bind, so each
controller gets a block there that was free a moment before.
"""

from __future__ import annotations

import random
import socket

__all__ = ["controller_ports"]

_BLOCK = 32  # a controller binds 16 ports by default (more with deeper broadcast schedulers)
_BLOCKS = range(20_000, 32_000, _BLOCK)


def controller_ports() -> str:
    """``--IPController.ports=first-last``: a block of loopback ports, below the ephemeral range,
    free now."""
    for first in random.sample(_BLOCKS, len(_BLOCKS)):
        if all(map(_free, range(first, first + _BLOCK))):
            return f"--IPController.ports={first}-{first + _BLOCK - 1}"
    raise RuntimeError(f"no block of {_BLOCK} free ports in {_BLOCKS}")


def _free(port: int) -> bool:
    """Whether nothing is bound to ``port`` on loopback."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True

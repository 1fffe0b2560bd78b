"""Helpers of the multi-process tests (`accelerate launch` / `torchrun` on CPU, gloo)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port free right now on localhost, for the launcher's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""Helpers of the multi-process tests (`accelerate launch` / `torchrun` on CPU, gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free right now on localhost, for the launcher's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(
    *args: str, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """`accelerate launch` with two CPU processes (gloo) of `args` (a script or -m module);
    `env` adds variables to this process's environment (one intra-op thread, no GPU)."""
    launcher = Path(sys.executable).parent / "accelerate"
    full_env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", **(env or {}))
    config = ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"
    cmd = [str(launcher), "launch", "--config_file", str(config)]
    cmd += ["--main_process_port", str(free_port()), *args]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)

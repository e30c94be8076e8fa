"""Small helpers for benchmarks and tests that run servers on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float = 180, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200 (and, with ``proc``, stop as soon as that process exits).

    Raises:
        TimeoutError: no 200 within ``timeout_s`` seconds.
        RuntimeError: ``proc`` exited first.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before {url} was ready")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1 if proc is not None else 0.5)
    raise TimeoutError(f"{url} not ready after {timeout_s} s")

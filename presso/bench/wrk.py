"""Closed-loop HTTP load from ``wrk`` (C, one thread), replaying real texts with ``wrk_replay.lua``.

A Python load generator cannot keep a server's queue full on a 2-core machine (it becomes the
bottleneck itself), so benchmarks drive the service with wrk in its own process and report the
CPU time that process used.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).with_name("wrk_replay.lua")


def wrk_binary() -> str:
    """Path of ``wrk``.

    Raises:
        RuntimeError: wrk is not installed.
    """
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("needs wrk (Debian: apt-get install wrk)")
    return found


def write_texts(texts: list[str], path: Path) -> Path:
    """One JSON string per line, the format ``wrk_replay.lua`` reads."""
    path.write_text("\n".join(json.dumps(t) for t in texts) + "\n")
    return path


def start(url: str, texts_file: Path, connections: int, duration_s: float, paths: str = "/ner",
          max_requests: int = 0, timeout_s: float = 30, delay_ms: float = 0,
          body: tuple[str, str] = ('{"text": ', "}")) -> subprocess.Popen:
    """Start one wrk process (``connections`` closed-loop clients, each pausing ``delay_ms`` between
    requests) against ``url``; each request body is ``body[0] + <JSON string of a text> + body[1]``;
    see :func:`result`."""
    env = {**os.environ, "PRESSO_WRK_TEXTS": str(texts_file), "PRESSO_WRK_PATHS": paths,
           "PRESSO_WRK_MAX_REQUESTS": str(max_requests), "PRESSO_WRK_DELAY_MS": str(int(round(delay_ms))),
           "PRESSO_WRK_BODY_PREFIX": body[0], "PRESSO_WRK_BODY_SUFFIX": body[1]}
    cmd = [wrk_binary(), "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--timeout",
           f"{int(timeout_s)}s", "-s", str(SCRIPT), url]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def result(output: str) -> dict:
    """The ``WRK_RESULT`` line of one wrk run: counts by status class, ``duration_s``, ``p50_ms``/
    ``p95_ms``/``p99_ms``.

    Raises:
        RuntimeError: wrk printed no result (the script or the connection failed).
    """
    for line in output.splitlines():
        if line.startswith("WRK_RESULT "):
            return json.loads(line.split(" ", 1)[1])
    raise RuntimeError(f"wrk did not report: {output[-2000:]}")


def run(url: str, texts_file: Path, connections: int, duration_s: float, paths: str = "/ner",
        max_requests: int = 0, delay_ms: float = 0, body: tuple[str, str] = ('{"text": ', "}")) -> dict:
    """Run wrk to completion; its result plus ``loadgen_cpu_s`` (CPU seconds wrk used)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = start(url, texts_file, connections, duration_s, paths, max_requests, delay_ms=delay_ms, body=body)
    out, _ = proc.communicate(timeout=duration_s + 120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = result(out)
    report["loadgen_cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3)
    return report

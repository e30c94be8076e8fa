"""PRESSO_WORKERS > 1: a killed worker is replaced and the metrics stay exact (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from presso.bench.net import wait_ready
from tests.conftest import free_port

psutil = pytest.importorskip("psutil")
ROOT = Path(__file__).resolve().parents[1]


def metric(url: str, line_start: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(line_start)


def workers(master: psutil.Process) -> set[int]:
    """The arbiter's live children (a reaped or zombie worker is not one)."""
    live = set()
    for p in master.children():
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                live.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return live


def log_tail(path: Path, lines: int = 40) -> str:
    """The server log's last lines, for an assertion message (what the arbiter said)."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def test_killed_worker_is_replaced_and_counters_stay_exact(fake_models_dir, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PRESSO_MODELS_DIR": str(fake_models_dir), "PRESSO_PORT": str(port),
           "PRESSO_WORKERS": "2", "PRESSO_SHUTDOWN_GRACE_S": "10", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "presso.cli", "serve"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_ready(url + "/health/ready", 90, proc)
        master = psutil.Process(proc.pid)
        deadline = time.monotonic() + 60
        while len(workers(master)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        before = workers(master)
        assert len(before) == 2, (before, log_tail(tmp_path / "server.log"))
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(20):
                assert c.post("/ner", json={"text": "John lives in Paris"}).status_code == 200
            victim = sorted(before)[0]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 90  # the replacement boots (imports, loads) on a loaded host
            while (len(workers(master)) < 2 or victim in workers(master)) and time.monotonic() < deadline:
                time.sleep(0.2)
            now = workers(master)
            assert victim not in now and len(now) == 2, (now, log_tail(tmp_path / "server.log"))
            wait_ready(url + "/health/ready", 60, proc)
            served = 0
            while served < 20:
                r = c.post("/ner", json={"text": "John lives in Paris"})
                if r.status_code == 200:
                    served += 1
                else:  # a worker still warming up answers 503, never anything else
                    assert r.status_code == 503, r.text
        def all_ready() -> bool:  # every live worker has written its readiness, and all are 1
            files = set(os.listdir(tmp_path / "prom"))
            return ({f"gauge_livemin_{pid}.db" for pid in workers(master)} <= files
                    and metric(url, "presso_ready") == 1)

        while not all_ready() and time.monotonic() < deadline:  # the new worker warms up
            time.sleep(0.2)
        for _ in range(4):  # whichever worker answers, the totals are the same
            assert metric(url, 'presso_requests_total{endpoint="/ner",status="200"}') == 40
            assert metric(url, 'presso_inflight_requests{endpoint="/ner"}') == 0
            assert metric(url, "presso_ready") == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_routes_serve_from_every_worker(fake_models_dir, tmp_path):
    """A router route (the sentiment fake routes to the NER fake) answers from each of 2 workers, and
    the per-route counters add up across them."""
    import json

    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps({"routes": {"by-mood": {
        "kind": "router", "task": "ner", "router": "fake-sentiment", "default": True,
        "experts": {label: {"model": "fake-ner"} for label in ("negative", "neutral", "positive")}}}}))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PRESSO_MODELS_DIR": str(fake_models_dir), "PRESSO_PORT": str(port),
           "PRESSO_WORKERS": "2", "PRESSO_ROUTES_FILE": str(routes),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "presso.cli", "serve"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_ready(url + "/health/ready", 90, proc)
        with httpx.Client(base_url=url, timeout=30) as c:
            for _ in range(10):  # new connections: both workers answer some
                with httpx.Client(base_url=url, timeout=30) as fresh:
                    body = fresh.post("/ner", json={"text": "john lives in paris"}).json()
                    assert body["route"] == "by-mood" and body["model"] == "fake-ner", body
            total = metric(url, 'presso_route_texts_total{model="fake-sentiment",outcome="scored",route="by-mood"}')
            assert total == 10
            assert c.post("/ner", json={"text": "x", "route": "nope"}).status_code == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()

"""Shutdown and model reload without losing accepted requests (real processes, real HTTP)."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from presso.bench.net import wait_ready
from tests.conftest import LiveServer, free_port, make_settings

ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_drains_every_accepted_request_then_exits_0(fake_models_dir, tmp_path):
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "PRESSO_MODELS_DIR": str(fake_models_dir), "PRESSO_PORT": str(port),
           "PRESSO_SHUTDOWN_GRACE_S": "20", "PRESSO_MAX_BATCH_SIZE": "2", "PRESSO_INFERENCE_THREADS": "2",
           "SLOW_INFER_S": "0.1", "PRESSO_LOG_FORMAT": "json"}
    with open(log_path, "wb") as log_file:  # a file, not a pipe: a full pipe would block the server
        proc = subprocess.Popen([sys.executable, "-m", "tests.slow_server"], cwd=ROOT, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/health/ready", 60, proc)
        signalled = threading.Event()
        secret = "Zebulon Quayle lives in Paris"
        # one client for the burst and one, already connected, for the probe: a fresh httpx client per
        # request builds an SSL context (~0.1 s of CPU), which on a busy machine starved the probe
        # past the end of the drain
        client = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=128, max_keepalive_connections=0))
        probe = httpx.Client(timeout=5)
        probe.get(url + "/health/live")

        def send(i: int):
            time.sleep(0.01 * i)  # a burst spread over the signal
            sent_after_signal = signalled.is_set()
            try:
                r = client.post(url + "/ner", json={"text": f"{secret} {i}"})
                return i, sent_after_signal, r.status_code, r.json()
            except httpx.ConnectError:
                return i, sent_after_signal, "refused", None  # never accepted: the listener had closed
            except httpx.TransportError as exc:
                return i, sent_after_signal, f"lost: {type(exc).__name__}", None

        def in_flight() -> float:
            text = probe.get(url + "/metrics").text
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("presso_inflight_requests{"))

        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            # one long request (30 texts: 15 slow batches) is surely running at the signal, so the
            # drain lasts past it even when a busy machine starves the client threads below
            long = pool.submit(client.post, url + "/ner", json={"texts": [f"{secret} long {i}" for i in range(30)]})
            deadline = time.monotonic() + 20
            while in_flight() < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            futures = [pool.submit(send, i) for i in range(120)]
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            signalled.set()
            try:
                ready = probe.get(url + "/health/ready")
            except httpx.ConnectError as exc:  # the listener closed: the log says why
                raise AssertionError(f"readiness probe refused ({exc}); server log:\n{log_path.read_text()[-4000:]}")
            outcomes = [f.result() for f in futures]
            assert long.result().status_code == 200  # accepted before the signal: finished, not cut
        client.close()
        probe.close()
        assert ready.status_code == 503, log_path.read_text()[-3000:]
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    statuses = [o[2] for o in outcomes]
    lost = [o for o in outcomes if str(o[2]).startswith("lost") or o[2] not in (200, 503, "refused")]
    assert not lost, lost
    assert 200 in statuses  # the ones accepted before the signal finished
    assert all(o[3]["error"] == "shutting_down" for o in outcomes if o[2] == 503)
    assert 503 in statuses  # new requests during the drain were answered, not reset
    logs = log_path.read_text()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line["logger"] == "presso.access" and len(line["request_id"]) == 32 for line in lines)
    assert secret not in logs  # request texts are never logged


def new_version(artifact: Path) -> None:
    """Rewrite the artifact's ONNX file with a different doc string (same weights) and checksum."""
    import onnx

    model = onnx.load(str(artifact / "model.onnx"))
    model.doc_string = f"retrained {time.time()}"
    onnx.save(model, str(artifact / "model.onnx"))
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["model_sha256"] = hashlib.sha256((artifact / "model.onnx").read_bytes()).hexdigest()
    (artifact / "manifest.json").write_text(json.dumps(manifest))


def test_reload_swaps_versions_without_failing_requests_and_refuses_a_bad_artifact(fake_models_dir, tmp_path):
    from presso.service.api import create_app

    models = tmp_path / "models"
    shutil.copytree(fake_models_dir, models)
    app = create_app(make_settings(models, max_wait_ms=1.0))
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        def version() -> str:
            return next(m["version"] for m in c.get("/models").json()["models"] if m["name"] == "fake-ner")

        before = version()
        stop = threading.Event()
        answers: list[int] = []

        def traffic():
            with httpx.Client(base_url=server.url, timeout=30) as own:
                while not stop.is_set():
                    answers.append(own.post("/ner", json={"texts": ["John lives in Paris"] * 4}).status_code)

        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            new_version(models / "fake-ner")
            r = c.post("/models/fake-ner/reload")
            assert r.status_code == 200, r.text
            assert r.json()["previous_version"] == before and r.json()["version"] == version() != before
            # a corrupt artifact (checksum mismatch) is refused; the running version keeps serving
            (models / "fake-ner" / "model.onnx").write_bytes(b"not a model")
            bad = c.post("/models/fake-ner/reload")
            assert bad.status_code == 422 and bad.json()["error"] == "invalid_artifact"
            assert version() == r.json()["version"]
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert answers and set(answers) == {200}
        assert c.post("/models/nope/reload").status_code == 404
        assert c.post("/ner", json={"text": "John lives in Paris"}).status_code == 200


def edit_manifest(artifact: Path, **changes) -> None:
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest.update(changes)
    (artifact / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("breakage", [
    {"max_seq_len": 100_000}, {"max_seq_len": "abc"}, {"max_seq_len": -5}, {"max_seq_len": True},
    {"labels": ["O", "B-PER"]}, {"labels": 5}, {"labels": []}, {"model_file": 5}, {"model_file": "../x.onnx"},
    {"task": "sequence-classification"}, "tokenizer", "other-model",
])
def test_reload_refuses_artifacts_that_would_break_serving(fake_models_dir, tmp_path, breakage):
    from presso.service.api import create_app

    models = tmp_path / "models"
    shutil.copytree(fake_models_dir, models)
    artifact = models / "fake-ner"
    app = create_app(make_settings(models))
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        if breakage == "tokenizer":
            (artifact / "tokenizer.json").write_text("{}")
        elif breakage == "other-model":  # a valid file of the other task, with its checksum
            shutil.copy(models / "fake-sentiment" / "model.onnx", artifact / "model.onnx")
            edit_manifest(artifact, model_sha256=hashlib.sha256((artifact / "model.onnx").read_bytes()).hexdigest())
        else:
            edit_manifest(artifact, **breakage)
        r = c.post("/models/fake-ner/reload")
        assert r.status_code == 422 and r.json()["error"] == "invalid_artifact", r.text
        long_text = "John lives in Paris . " * 200  # several windows
        assert c.post("/ner", json={"text": long_text}).status_code == 200


def test_requests_still_running_at_the_grace_deadline_get_a_json_503_and_exit_is_on_time(fake_models_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "PRESSO_MODELS_DIR": str(fake_models_dir), "PRESSO_PORT": str(port),
           "PRESSO_SHUTDOWN_GRACE_S": "2", "PRESSO_MAX_BATCH_SIZE": "1", "PRESSO_INFERENCE_THREADS": "1",
           "PRESSO_ALL_CORES_WHEN_IDLE": "false", "PRESSO_WARMUP": "false", "SLOW_INFER_S": "4"}
    with open(tmp_path / "server.log", "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "tests.slow_server"], cwd=ROOT, env=env, stdout=log_file,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/health/ready", 60, proc)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(httpx.post, url + "/ner", json={"text": f"John {i}"}, timeout=30) for i in range(3)]
            time.sleep(0.5)  # one batch running (4 s), two queued
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            answers = [f.result() for f in futures]
        assert proc.wait(timeout=30) == 0
        took_s = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took_s < 2 + 3, took_s  # the grace, plus the running batch's rest and shutdown; never twice the grace
    log = (tmp_path / "server.log").read_text()
    assert "Exception in ASGI application" not in log and "Traceback" not in log, log[-3000:]
    for r in answers:
        assert r.status_code in (200, 503) and r.headers["content-type"] == "application/json", r.text
        if r.status_code == 503:
            assert r.json()["error"] == "shutting_down"

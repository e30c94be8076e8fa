"""Scheduling seen through HTTP: long texts as NER windows, classification truncation policy,
deadlines (504), overload (429), per-model metrics at zero, and an event loop that stays free
while ONNX Runtime works (the single-process design behind the exact metrics)."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import httpx
import pytest

from tests.conftest import LiveServer, make_settings


def slow_models(models_dir, delay_s: float, started: threading.Event | None = None):
    """The fake models with every batch delayed by ``delay_s`` (a stand-in for a busy CPU)."""
    from presso.service.registry import load_models

    models = load_models(models_dir, ["CPUExecutionProvider"], 1)
    for model in models.values():
        real = model.infer

        def slow(items, real=real, **kw):
            if started is not None:
                started.set()
            time.sleep(delay_s)
            return real(items, **kw)

        model.infer = slow
    return models


def serve(models_dir, models=None, **overrides):
    from presso.service.api import create_app

    return LiveServer(create_app(make_settings(models_dir, **overrides), models=models))


def test_long_ner_text_runs_as_windows_and_every_entity_appears_once(fake_models_dir):
    sentence = "john smith lives in new york . "
    text = sentence * 20  # 160 tokens, the fake model's max_seq_len is 32
    with serve(fake_models_dir, ner_window_stride_tokens=8) as server, httpx.Client(base_url=server.url) as c:
        body = c.post("/ner", json={"text": text}).json()
    assert body["windows"] > 4
    labels = [(e["label"], e["text"]) for e in body["entities"]]
    assert labels == [("PER", "john smith"), ("LOC", "new york")] * 20
    starts = [e["start"] for e in body["entities"]]
    assert starts == sorted(set(starts))
    assert all(text[e["start"]:e["end"]] == e["text"] for e in body["entities"])


def test_classification_truncates_by_default_or_refuses_when_configured(fake_models_dir):
    long = "good day " * 40
    with serve(fake_models_dir) as server, httpx.Client(base_url=server.url) as c:
        r = c.post("/classify", json={"texts": ["good", long]})
        assert r.status_code == 200 and [x["truncated"] for x in r.json()["results"]] == [False, True]
    with serve(fake_models_dir, classify_long_text="reject") as server, httpx.Client(base_url=server.url) as c:
        r = c.post("/classify", json={"texts": ["good", long]})
        assert r.status_code == 422 and r.json()["field"] == "body.texts.1"
        assert c.post("/classify", json={"text": "good"}).status_code == 200


def test_deadline_answers_504_and_the_service_keeps_serving(fake_models_dir):
    started = threading.Event()
    models = slow_models(fake_models_dir, 0.5, started)
    with serve(fake_models_dir, models, warmup=False, max_batch_size=1, inference_threads=1) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c, concurrent.futures.ThreadPoolExecutor(2) as pool:
        busy = pool.submit(c.post, "/ner", json={"text": "paris"})
        assert started.wait(5)
        late = c.post("/ner", json={"text": "john", "timeout_ms": 50})
        assert late.status_code == 504
        assert late.json()["error"] == "deadline_exceeded" and late.json()["field"] == "body.timeout_ms"
        assert busy.result().status_code == 200
        assert c.post("/ner", json={"text": "john", "timeout_ms": 5000}).status_code == 200
        assert c.post("/ner", json={"text": "john", "timeout_ms": "soon"}).status_code == 422
        assert c.post("/ner", json={"text": "john", "timeout_ms": 0}).status_code == 422
        metrics = c.get("/metrics").text
    assert 'presso_timed_out_requests_total{model="fake-ner"} 1.0' in metrics
    assert 'presso_requests_total{endpoint="/ner",status="504"} 1.0' in metrics


def test_overload_answers_429_with_retry_after_at_once(fake_models_dir):
    started = threading.Event()
    models = slow_models(fake_models_dir, 0.5, started)
    with serve(fake_models_dir, models, warmup=False, max_batch_size=1, inference_threads=1, max_queued_tokens=20) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c, concurrent.futures.ThreadPoolExecutor(4) as pool:
        busy = pool.submit(c.post, "/ner", json={"text": "paris"})
        assert started.wait(5)
        queued = pool.submit(c.post, "/ner", json={"texts": ["john smith lives in paris"] * 2})  # 2 x 7 tokens
        time.sleep(0.1)
        t0 = time.monotonic()
        refused = c.post("/ner", json={"texts": ["john smith lives in paris"]})
        assert time.monotonic() - t0 < 0.4  # answered before the running batch ends
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"] == "overloaded"
        assert busy.result().status_code == 200 and queued.result().status_code == 200
        metrics = c.get("/metrics").text
    assert 'presso_rejected_requests_total{model="fake-ner"} 1.0' in metrics


def test_event_loop_answers_while_a_batch_runs(fake_models_dir):
    started = threading.Event()
    models = slow_models(fake_models_dir, 1.0, started)
    with serve(fake_models_dir, models, warmup=False) as server, httpx.Client(base_url=server.url) as c, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(c.post, "/ner", json={"text": "paris"})
        assert started.wait(5)
        t0 = time.monotonic()
        assert c.get("/health/ready").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert time.monotonic() - t0 < 0.5
        assert busy.result().status_code == 200


@pytest.mark.parametrize("series", [
    'presso_queue_tokens{model="fake-ner"} 0.0',
    'presso_batch_tokens_count{model="fake-sentiment"} 0.0',
    'presso_padding_ratio_count{model="fake-ner"} 0.0',
    'presso_rejected_requests_total{model="fake-sentiment"} 0.0',
    'presso_timed_out_requests_total{model="fake-ner"} 0.0',
    'presso_requests_total{endpoint="/classify",status="429"} 0.0',
    'presso_requests_total{endpoint="/ner",status="504"} 0.0',
])
def test_scheduling_series_exist_at_zero_from_startup(fake_models_dir, series):
    with serve(fake_models_dir, warmup=True) as server, httpx.Client(base_url=server.url) as c:  # warm-up uncounted
        assert series in c.get("/metrics").text


def test_texts_of_a_client_that_disconnected_are_dropped_before_inference(fake_models_dir):
    import json
    import socket

    started = threading.Event()
    seen: list[str] = []
    models = slow_models(fake_models_dir, 0.5, started)
    slow = models["fake-ner"].infer

    def recording(items, **kw):
        seen.extend(i.text for i in items)
        return slow(items, **kw)

    models["fake-ner"].infer = recording
    with serve(fake_models_dir, models, warmup=False, max_batch_size=1, inference_threads=1) as server, \
            httpx.Client(base_url=server.url, timeout=30) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        busy = pool.submit(c.post, "/ner", json={"text": "paris"})
        assert started.wait(5)
        body = json.dumps({"text": "gone before inference"}).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            time.sleep(0.1)  # queued behind the running batch
        assert busy.result().status_code == 200
        assert c.post("/ner", json={"text": "john"}).status_code == 200
        metrics = c.get("/metrics").text
    assert "gone before inference" not in seen and "john" in seen
    assert 'presso_queue_depth{model="fake-ner"} 0.0' in metrics


def test_lone_surrogates_and_requests_over_the_token_bound_get_clear_4xx(fake_models_dir):
    with serve(fake_models_dir, max_queued_tokens=50) as server, httpx.Client(base_url=server.url) as c:
        r = c.post("/ner", content=b'{"texts": ["paris", "paris \\ud800 london"]}',
                   headers={"content-type": "application/json"})
        assert r.status_code == 422 and r.json() == {"error": "invalid_text", "field": "body.texts.1",
                                                     "message": r.json()["message"]}
        r = c.post("/ner", json={"texts": ["john smith lives in paris"] * 10})  # 70 tokens > 50
        assert r.status_code == 413 and r.json()["error"] == "too_many_tokens"
        assert c.post("/ner", json={"text": "john smith lives in paris"}).status_code == 200  # still serving


def test_a_huge_list_of_non_strings_is_refused_without_stalling_the_event_loop(fake_models_dir):
    body = b'{"texts": [' + b",".join([b"1"] * 300_000) + b"]}"
    with serve(fake_models_dir, warmup=False) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/classify", content=body, headers={"content-type": "application/json"})
    # one error at the hard limit (validation stops there), not 300,000 item errors answered 422
    assert r.status_code == 413 and r.json()["error"] == "too_many_texts" and r.json()["field"] == "body.texts"


def test_the_deadline_counts_from_arrival_not_from_a_slowly_sent_body(fake_models_dir):
    """A body trickled in over longer than ``timeout_ms`` is answered 504 at once, not run."""
    import json
    import socket

    body = json.dumps({"text": "john smith", "timeout_ms": 300}).encode()
    head = (b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n")
    with serve(fake_models_dir) as server, socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head)
        for i in range(0, len(body), 8):
            s.sendall(body[i:i + 8])
            time.sleep(0.1)  # the whole body takes ~0.6 s to arrive
        answer = s.recv(65536).decode()
    status, _, rest = answer.partition("\r\n")
    assert " 504 " in status, answer
    payload = json.loads(rest.split("\r\n\r\n", 1)[1])
    assert payload["error"] == "deadline_exceeded" and "counted from arrival" in payload["message"]


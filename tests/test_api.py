"""The HTTP API through real HTTP on 127.0.0.1, with fake tiny models."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest

from tests.conftest import LiveServer, make_settings


@pytest.fixture(scope="module")
def client(live_server):
    with httpx.Client(base_url=live_server.url, timeout=30) as c:
        yield c


def test_health_and_models(client):
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["models"] == ["fake-ner", "fake-sentiment"]
    names = {m["name"]: m["task"] for m in client.get("/models").json()["models"]}
    assert names == {"fake-ner": "token-classification", "fake-sentiment": "sequence-classification"}


def test_ner_single_text(client):
    r = client.post("/ner", json={"text": "😀 John Smith lives in Paris."})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "fake-ner" and body["windows"] == 1
    assert [(e["label"], e["text"], e["start"], e["end"]) for e in body["entities"]] == [
        ("PER", "John Smith", 2, 12), ("LOC", "Paris", 22, 27)]


def test_ner_several_texts_in_order_and_empty_text(client):
    texts = ["Paris", "", "   ", "john", "new york is great"]
    r = client.post("/ner", json={"texts": texts})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [[e["text"] for e in res["entities"]] for res in results] == [["Paris"], [], [], ["john"], ["new york"]]


def test_classify(client):
    one = client.post("/classify", json={"text": "an awful day"}).json()
    assert one["label"] == "negative" and one["model"] == "fake-sentiment"
    assert set(one["scores"]) == {"negative", "neutral", "positive"}
    assert abs(sum(one["scores"].values()) - 1) < 1e-4
    many = client.post("/classify", json={"texts": ["good", "bad", "the"]}).json()
    assert [r["label"] for r in many["results"]] == ["positive", "negative", "neutral"]


def test_health_answers_head_as_load_balancers_send_it(client):
    for path in ("/health/live", "/health/ready"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", (path, r.status_code)


def test_form_content_type_is_read_as_json(client):
    r = client.post("/ner", content=b'{"text": "paris"}', headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200 and r.json()["entities"][0]["text"] == "paris"


@pytest.mark.parametrize("body, status, field", [
    (b'{"text": 123}', 422, "body.text"),
    (b'{"texts": ["a", 5]}', 422, "body.texts.1"),
    (b'{"texts": []}', 422, "body.texts"),
    (b'{"text": "a", "texts": ["b"]}', 422, "body"),
    (b'{}', 422, "body"),
    (b'null', 422, "body"),
    (b'{"text": {"nested": 1}}', 422, "body.text"),
    (b'{"text": "a", "unknown": 1}', 422, "body.unknown"),
    (b'{"text": "a", "model": "nope"}', 404, "body.model"),
    (b'{"text": "a", "model": "fake-sentiment"}', 422, "body.model"),
    (b'{not json', 400, "body"),
    (b'\xff\xfe\x00', 400, "body"),
    ('{"text": "paris"}'.encode("utf-16"), 400, "body"),  # JSON is UTF-8 (RFC 8259)
    (b'{"text": "caf\xe9"}', 400, "body"),  # latin-1
])
def test_bad_input_gets_a_json_4xx_naming_the_field(client, body, status, field):
    r = client.post("/ner", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()
    assert err["field"] == field and err["message"] and err["error"]


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
@pytest.mark.parametrize("path", ["/ner", "/v2/models/fake-ner/infer"])
def test_a_compressed_body_is_refused_naming_the_header(client, encoding, path):
    import gzip

    r = client.post(path, content=gzip.compress(b'{"text": "paris"}'),
                    headers={"content-type": "application/json", "content-encoding": encoding})
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "unsupported_media_type" and r.json()["field"] == "header.content-encoding"


def test_a_utf8_byte_order_mark_is_ignored(client):
    r = client.post("/ner", content=b'\xef\xbb\xbf{"text": "paris"}', headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["entities"][0]["text"] == "paris"


def test_limits(fake_models_dir):
    from presso.service.api import create_app

    app = create_app(make_settings(fake_models_dir, max_texts_per_request=2, max_text_chars=10))
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as c:
        r = c.post("/ner", json={"texts": ["a", "b", "c"]})
        assert r.status_code == 413 and r.json()["field"] == "body.texts"
        r = c.post("/ner", json={"texts": ["a", "x" * 11]})
        assert r.status_code == 413 and r.json()["field"] == "body.texts.1"


def test_concurrent_requests_are_batched_and_answered_correctly(client):
    texts = [f"john lives in {'paris' if i % 2 else 'new york'}" for i in range(40)]

    def send(t):
        return client.post("/ner", json={"text": t}).json()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, texts))
    for t, a in zip(texts, answers):
        assert [e["text"] for e in a["entities"]] == ["john", "paris" if t.endswith("paris") else "new york"]
    metrics = client.get("/metrics").text
    assert 'presso_batch_size_count{model="fake-ner"}' in metrics
    assert 'presso_requests_total{endpoint="/ner",status="200"}' in metrics


def test_metrics_exist_at_zero_for_every_model(client):
    text = client.get("/metrics").text
    for name in ("fake-ner", "fake-sentiment"):
        assert f'presso_queue_depth{{model="{name}"}}' in text
        assert f'presso_inference_duration_seconds_count{{model="{name}"}}' in text
    assert "presso_ready 1.0" in text
    assert 'presso_inflight_requests{endpoint="/ner"} 0.0' in text


def test_inference_fault_fails_the_batch_with_json_500_and_service_keeps_serving(fake_models_dir):
    from presso.service.api import create_app
    from presso.service.registry import load_models

    models = load_models(fake_models_dir, ["CPUExecutionProvider"], 1)
    real = models["fake-ner"].infer

    def flaky(items, **kw):
        if any(i.text == "explode" for i in items):
            raise RuntimeError("injected")
        return real(items, **kw)

    models["fake-ner"].infer = flaky
    with LiveServer(create_app(make_settings(fake_models_dir, warmup=False), models=models)) as server, \
            httpx.Client(base_url=server.url) as c:
        r = c.post("/ner", json={"text": "explode"})
        assert r.status_code == 500 and r.json()["error"] == "inference_failed"
        assert c.post("/ner", json={"text": "paris"}).status_code == 200


def test_openapi_schema_documents_the_endpoints(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/ner", "/classify", "/health/ready", "/metrics", "/models"} <= set(paths)


def test_an_unknown_model_name_is_not_echoed_in_full(live_server):
    import httpx

    r = httpx.post(live_server.url + "/ner", json={"text": "john", "model": "x" * 100_000}, timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "unknown_model"
    assert len(r.content) < 1000 and "(100000 characters)" in r.json()["message"]

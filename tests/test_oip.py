"""Open Inference Protocol (KServe v2 / Triton REST): the codec without a server, then a real
client (``tritonclient[http]``) over HTTP on 127.0.0.1 against fake models."""

from __future__ import annotations

import json
import struct

import httpx
import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from presso.core.manifest import Task
from presso.service.oip.codec import ProtocolError, check_outputs, model_metadata, output_tensors, parse_infer
from tests.conftest import LiveServer, make_settings


def body(texts, **extra) -> bytes:
    return json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}],
                       **extra}).encode()


def binary_body(texts: list[str]) -> tuple[bytes, str]:
    blob = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)],
                                     "parameters": {"binary_data_size": len(blob)}}]}).encode()
    return header + blob, str(len(header))


# -- codec ------------------------------------------------------------------------------------------

def test_json_and_binary_inputs_give_the_same_texts():
    texts = ["John lives in Paris", "", "Zoë in Köln ✓"]
    assert parse_infer(body(texts), None, 10).texts == texts
    raw, length = binary_body(texts)
    assert parse_infer(raw, length, 10).texts == texts


@hsettings(max_examples=50, deadline=None)
@given(st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=30), min_size=1, max_size=8))
def test_binary_bytes_round_trip(texts):
    raw, length = binary_body(texts)
    assert parse_infer(raw, length, 100).texts == texts


@pytest.mark.parametrize("raw, message", [
    (b"not json", "not valid JSON"),
    (b"[]", "JSON object"),
    (json.dumps({"inputs": []}).encode(), "exactly one input"),
    (json.dumps({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}).encode(), "unknown input"),
    (json.dumps({"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}).encode(), "BYTES"),
    (json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a"]}]}).encode(), "data has 1"),
    (json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}]}).encode(), "shape"),
    (json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [3]}]}).encode(), "string"),
    (json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a", None]}]}).encode(),
     "element 1 is NoneType"),
    (body(["a"]).decode().encode("utf-16"), "not valid JSON"),
    (json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [0], "data": []}]}).encode(), "no texts"),
    (body(["a"] * 5), "at most 4"),
    (body(["a"], parameters={"timeout_ms": 0}), "timeout_ms"),
])
def test_bad_requests_are_protocol_errors(raw, message):
    with pytest.raises(ProtocolError, match=message):
        parse_infer(raw, None, 4)


@pytest.mark.parametrize("length", ["\u00b2", "9" * 5000, "-1", "", "0x10"])
def test_odd_header_lengths_are_protocol_errors(length):
    raw, _ = binary_body(["hello"])
    with pytest.raises(ProtocolError, match="Inference-Header-Content-Length"):
        parse_infer(raw, length, 4)


def test_deep_nesting_and_stray_binary_are_protocol_errors():
    with pytest.raises(ProtocolError, match="nested too deeply"):
        parse_infer(b"[" * 100_000, None, 4)
    raw = body(["a"]) + b"\x00\x00\x00\x00"
    with pytest.raises(ProtocolError, match="no binary_data_size"):
        parse_infer(raw, str(len(raw) - 4), 4)
    assert parse_infer(body(["a"], parameters={"timeout_ms": 100.0}), None, 4).timeout_ms == 100


def test_truncated_binary_data_is_a_protocol_error():
    raw, length = binary_body(["hello"])
    with pytest.raises(ProtocolError, match="binary_data_size"):
        parse_infer(raw[:-2], length, 4)


def test_outputs_follow_the_results():
    results = [{"label": "pos", "score": 0.9, "scores": {"neg": 0.1, "pos": 0.9}, "truncated": False},
               {"label": "neg", "score": 0.6, "scores": {"neg": 0.6, "pos": 0.4}, "truncated": True}]
    out = {t["name"]: t for t in output_tensors(Task.SEQUENCE_CLASSIFICATION, results, ["neg", "pos"],
                                                check_outputs(Task.SEQUENCE_CLASSIFICATION, None))}
    assert out["label"]["data"] == ["pos", "neg"] and out["scores"]["shape"] == [2, 2]
    assert out["scores"]["data"] == [0.1, 0.9, 0.6, 0.4] and out["truncated"]["data"] == [False, True]
    ner = [{"entities": [{"label": "PER", "text": "John", "start": 0, "end": 4, "score": 0.9}], "windows": 1},
           {"entities": [], "windows": 1}]
    out = {t["name"]: t for t in output_tensors(Task.TOKEN_CLASSIFICATION, ner, [], ["entity_text_index", "entity_end"])}
    assert out == {"entity_text_index": {"name": "entity_text_index", "datatype": "INT64", "shape": [1], "data": [0]},
                   "entity_end": {"name": "entity_end", "datatype": "INT64", "shape": [1], "data": [4]}}
    with pytest.raises(ProtocolError, match="unknown output"):
        check_outputs(Task.TOKEN_CLASSIFICATION, ["label"])


def test_metadata_lists_every_output():
    meta = model_metadata("m", "abc", Task.SEQUENCE_CLASSIFICATION, ["neg", "pos"])
    assert [o["name"] for o in meta["outputs"]] == ["label", "score", "scores", "truncated"]
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]


# -- over HTTP with Triton's own client ---------------------------------------------------------------

@pytest.fixture(scope="module")
def server(fake_models_dir):
    from presso.service.api import create_app

    with LiveServer(create_app(make_settings(fake_models_dir, max_wait_ms=2.0, max_texts_per_request=8))) as live:
        yield live


@pytest.fixture()
def client(server):
    httpclient = pytest.importorskip("tritonclient.http")
    with httpclient.InferenceServerClient(f"127.0.0.1:{server.port}") as c:
        yield c


def text_input(texts: list[str], binary: bool):
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary_data=binary)
    return tensor


def test_server_and_model_metadata_and_readiness(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "presso"
    assert client.is_model_ready("fake-ner") and client.is_model_ready("fake-sentiment")
    meta = client.get_model_metadata("fake-sentiment")
    assert meta["inputs"][0]["name"] == "text" and {o["name"] for o in meta["outputs"]} >= {"label", "scores"}
    assert not client.is_model_ready("no-such-model")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_through_tritonclient_matches_classify(server, client, binary):
    texts = ["what a great day", "this is awful", "meh"]
    result = client.infer("fake-sentiment", [text_input(texts, binary)])
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label").tolist()]
    scores = result.as_numpy("scores")
    rest = httpx.post(server.url + "/classify", json={"texts": texts, "model": "fake-sentiment"}).json()["results"]
    assert labels == [r["label"] for r in rest]
    assert scores.shape == (3, len(rest[0]["scores"]))
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    assert np.allclose(result.as_numpy("score"), [r["score"] for r in rest], atol=1e-6)


def test_ner_through_tritonclient_matches_ner(server, client):
    import tritonclient.http as httpclient

    texts = ["John Smith lives in Paris", "Nothing here", "Angela Merkel met Emmanuel Macron in Berlin"]
    wanted = ["entity_text_index", "entity_label", "entity_start", "entity_end", "entity_text"]
    result = client.infer("fake-ner", [text_input(texts, True)],
                          outputs=[httpclient.InferRequestedOutput(n, binary_data=False) for n in wanted])
    got = {n: result.as_numpy(n).tolist() for n in wanted}
    rest = httpx.post(server.url + "/ner", json={"texts": texts, "model": "fake-ner"}).json()["results"]
    expected = [(i, e["label"], e["start"], e["end"], e["text"]) for i, r in enumerate(rest) for e in r["entities"]]
    decoded = [x.decode() if isinstance(x, bytes) else x for x in got["entity_label"]]
    spans = [x.decode() if isinstance(x, bytes) else x for x in got["entity_text"]]
    assert list(zip(got["entity_text_index"], decoded, got["entity_start"], got["entity_end"], spans)) == expected
    assert all(texts[i][s:e] == t for i, _, s, e, t in expected)


def test_errors_are_the_protocols(server, client):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="no model named"):
        client.infer("no-such-model", [text_input(["x"], True)])
    with pytest.raises(InferenceServerException, match="at most 8"):
        client.infer("fake-sentiment", [text_input(["x"] * 9, True)])
    answer = httpx.post(server.url + "/v2/models/fake-ner/infer", content=b"{")
    assert answer.status_code == 400 and set(answer.json()) == {"error"}
    answer = httpx.get(server.url + "/v2/models/fake-ner/versions/000000000000")
    assert answer.status_code == 404 and "version" in answer.json()["error"]


def test_errors_name_the_input_element_at_fault(server):
    answer = httpx.post(server.url + "/v2/models/fake-sentiment/infer", content=body(["ok", "ok", "x" * 20_001]))
    assert answer.status_code == 413 and "element 2" in answer.json()["error"]
    answer = httpx.post(server.url + "/v2/models/fake-sentiment/infer", content=b"[" * 100_000)
    assert answer.status_code == 400 and "nested" in answer.json()["error"]


def test_infer_is_counted_under_one_metric_label(server):
    httpx.post(server.url + "/v2/models/fake-sentiment/infer", content=body(["hello"]))
    metrics = httpx.get(server.url + "/metrics").text
    assert 'endpoint="/v2/models/{name}/infer"' in metrics
    assert "fake-sentiment/infer" not in metrics


def test_api_keys_protect_the_protocols_model_paths(fake_models_dir):
    from presso.service.api import create_app

    app = create_app(make_settings(fake_models_dir, api_keys="k1"))
    with LiveServer(app) as live:
        assert httpx.get(live.url + "/v2/health/ready").status_code == 200
        assert httpx.post(live.url + "/v2/models/fake-sentiment/infer", content=body(["x"])).status_code == 401
        assert httpx.get(live.url + "/v2/models/fake-sentiment").status_code == 401
        ok = httpx.post(live.url + "/v2/models/fake-sentiment/infer", content=body(["x"]),
                        headers={"Authorization": "Bearer k1"})
        assert ok.status_code == 200 and ok.json()["model_name"] == "fake-sentiment"

"""Open Inference Protocol over gRPC: the request parser without a server, then Triton's own client
(``tritonclient[grpc]``) against fake models on 127.0.0.1, compared with the REST answers."""

from __future__ import annotations

import struct

import httpx
import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("grpc")

import tritonclient.grpc as grpcclient  # noqa: E402
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from presso.service.oip.codec import ProtocolError  # noqa: E402
from presso.service.oip.grpc import parse_model_infer, raw_contents  # noqa: E402
from tests.conftest import LiveServer, free_port, make_settings  # noqa: E402


def raw(texts: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)


def request(texts: list[str], shape=None, **extra):
    tensor = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES",
                                                   shape=shape or [len(texts)])
    return pb.ModelInferRequest(model_name="m", inputs=[tensor], raw_input_contents=[raw(texts)], **extra)


def test_raw_and_typed_contents_give_the_same_texts():
    texts = ["John lives in Paris", "", "Zoë in Köln ✓"]
    assert parse_model_infer(request(texts), 10).texts == texts
    typed = pb.ModelInferRequest(inputs=[pb.ModelInferRequest.InferInputTensor(
        name="text", datatype="BYTES", shape=[3, 1],
        contents=pb.InferTensorContents(bytes_contents=[t.encode() for t in texts]))])
    assert parse_model_infer(typed, 10).texts == texts


@pytest.mark.parametrize("build, message", [
    (lambda: pb.ModelInferRequest(), "exactly one input"),
    (lambda: request(["a"], shape=[2]), "data has 1"),
    (lambda: request(["a", "b"], shape=[1, 2]), "shape"),
    (lambda: request(["a"] * 5), "at most 4"),
    (lambda: pb.ModelInferRequest(inputs=[pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES",
                                                                                 shape=[1])],
                                  raw_input_contents=[b"\x09\x00\x00\x00ab"]), "runs past"),
    (lambda: request(["a"], parameters={"timeout_ms": pb.InferParameter(string_param="9")}), "timeout_ms"),
])
def test_bad_requests_are_protocol_errors(build, message):
    with pytest.raises(ProtocolError, match=message):
        parse_model_infer(build(), 4)


def test_raw_outputs_are_row_major_little_endian():
    assert raw_contents({"datatype": "FP32", "data": [1.0, 0.5]}) == struct.pack("<2f", 1.0, 0.5)
    assert raw_contents({"datatype": "INT64", "data": [3]}) == struct.pack("<q", 3)
    assert raw_contents({"datatype": "BOOL", "data": [True, False]}) == b"\x01\x00"
    assert raw_contents({"datatype": "BYTES", "data": ["é"]}) == b"\x02\x00\x00\x00\xc3\xa9"


# -- with Triton's gRPC client ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def served(fake_models_dir):
    from presso.service.api import create_app

    port = free_port()
    app = create_app(make_settings(fake_models_dir, max_wait_ms=2.0, max_texts_per_request=8, grpc_port=port))
    with LiveServer(app) as live:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        yield live, client
        client.close()


def text_input(texts: list[str]):
    tensor = grpcclient.InferInput("text", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    return tensor


def test_server_and_model_metadata_and_readiness(served):
    _, client = served
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata().name == "presso"
    assert client.is_model_ready("fake-ner") and client.is_model_ready("fake-sentiment")
    meta = client.get_model_metadata("fake-sentiment")
    assert meta.inputs[0].name == "text" and {o.name for o in meta.outputs} >= {"label", "scores"}
    with pytest.raises(InferenceServerException, match="no model named"):
        client.is_model_ready("no-such-model")


def test_classification_matches_classify(served):
    live, client = served
    texts = ["what a great day", "this is awful", "meh"]
    result = client.infer("fake-sentiment", [text_input(texts)], request_id="r1")
    rest = httpx.post(live.url + "/classify", json={"texts": texts, "model": "fake-sentiment"}).json()["results"]
    assert [x.decode() for x in result.as_numpy("label").tolist()] == [r["label"] for r in rest]
    assert np.allclose(result.as_numpy("score"), [r["score"] for r in rest], atol=1e-6)
    assert result.as_numpy("scores").shape == (3, len(rest[0]["scores"]))
    assert result.as_numpy("truncated").tolist() == [False] * 3
    assert result.get_response().id == "r1"


def test_ner_matches_ner(served):
    live, client = served
    texts = ["John Smith lives in Paris", "Nothing here", "Angela Merkel met Emmanuel Macron in Berlin"]
    result = client.infer("fake-ner", [text_input(texts)])
    rest = httpx.post(live.url + "/ner", json={"texts": texts, "model": "fake-ner"}).json()["results"]
    expected = [(i, e["label"], e["start"], e["end"]) for i, r in enumerate(rest) for e in r["entities"]]
    got = list(zip(result.as_numpy("entity_text_index").tolist(),
                   [x.decode() for x in result.as_numpy("entity_label").tolist()],
                   result.as_numpy("entity_start").tolist(), result.as_numpy("entity_end").tolist()))
    assert got == expected


def test_errors_are_grpc_status_codes(served):
    live, client = served
    with pytest.raises(InferenceServerException, match="no model named") as exc:
        client.infer("no-such-model", [text_input(["x"])])
    assert exc.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException, match="at most 8") as exc:
        client.infer("fake-sentiment", [text_input(["x"] * 9)])
    assert exc.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="element 1"):
        client.infer("fake-sentiment", [text_input(["ok", "x" * 20_001])])
    with pytest.raises(InferenceServerException, match="unknown output"):
        client.infer("fake-sentiment", [text_input(["ok"])], outputs=[grpcclient.InferRequestedOutput("nope")])
    metrics = httpx.get(live.url + "/metrics").text
    assert 'endpoint="grpc ModelInfer",status="404"' in metrics
    assert 'endpoint="grpc ModelInfer",status="200"' in metrics


def test_api_keys_protect_grpc_models(fake_models_dir):
    from presso.service.api import create_app

    port = free_port()
    with LiveServer(create_app(make_settings(fake_models_dir, api_keys="k1", grpc_port=port))):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_ready()
        with pytest.raises(InferenceServerException, match="API key") as exc:
            client.infer("fake-sentiment", [text_input(["x"])])
        assert exc.value.status() == "StatusCode.UNAUTHENTICATED"
        ok = client.infer("fake-sentiment", [text_input(["x"])], headers={"authorization": "Bearer k1"})
        assert ok.get_response().model_name == "fake-sentiment"
        client.close()

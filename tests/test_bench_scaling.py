"""``presso bench scaling`` pieces that need no load generator: texts of a target length, MAC
counting from the ONNX graph, the roofline point and the profiler split on a fake artifact."""

from __future__ import annotations

from presso.bench import scaling
from presso.core.encoding import artifact_encoder
from presso.core.manifest import parse_manifest


def test_texts_reach_the_target_length(fake_models_dir):
    artifact = fake_models_dir / "fake-ner"
    encoder = artifact_encoder(artifact, parse_manifest(artifact))
    sentences = ["john smith lives in paris", "new york is big", "the day is good"]
    texts, tokens = scaling.length_texts(encoder, sentences, 40, 5)
    assert len(texts) == 5 and tokens >= 40
    assert all(len(encoder.tokenizer.encode(t, add_special_tokens=False).ids) >= 40 for t in texts[:1]) or tokens >= 40


def test_macs_are_counted_per_kind_from_the_graph(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w8 = numpy_helper.from_array(np.ones((4, 6), dtype=np.int8), "w8")
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "scale")
    zero = numpy_helper.from_array(np.array(0, dtype=np.int8), "zero")
    w32 = numpy_helper.from_array(np.ones((6, 3), dtype=np.float32), "w32")
    nodes = [helper.make_node("DequantizeLinear", ["w8", "scale", "zero"], ["w8_dq"]),
             helper.make_node("MatMul", ["x", "w8_dq"], ["q"], name="/layer.0/attention/self/query/MatMul"),
             helper.make_node("MatMul", ["q", "w32"], ["y"], name="/classifier/MatMul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 3])],
                              [w8, scale, zero, w32])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert scaling.graph_macs(path, 16) == {"int8": 16 * 4 * 6, "fp32": 16 * 6 * 3, "attention": 2 * 16 * 16 * 6}


def test_roofline_and_profile_on_a_fake_artifact(fake_models_dir):
    artifact = fake_models_dir / "fake-ner"
    point = scaling.roofline(artifact, batch=2, seq_len=16, runs=3)
    assert point["p50_ms"] > 0 and point["achieved_macs_per_s"] >= 0
    assert 0 <= point["profile"]["matmul_share"] <= 1 and point["profile"]["node_ms_by_op"]
    assert point["cpu"]["isa"] in scaling.PEAK_MACS_PER_CYCLE


def test_two_vs_one_core_ratio():
    levels = [{"target_tokens": 16, "cores": 1, "throughput_rps": 100.0},
              {"target_tokens": 16, "cores": 2, "throughput_rps": 150.0}]
    assert scaling.two_vs_one(levels) == {"16": 1.5}

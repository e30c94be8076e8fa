"""``presso build --no-prune``: the fine-tuned encoder exported and quantized unpruned (a cascade's
accurate last step), recorded in the manifest."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from tests.test_arch_build import base_folder, conll, sentences  # noqa: E402


def test_a_no_prune_build_keeps_every_layer_and_says_so(tmp_path):
    from typer.testing import CliRunner

    from presso.cli import app

    folder = base_folder(tmp_path, "bert")
    train = tmp_path / "train.txt"
    conll(train, sentences(160))
    result = CliRunner().invoke(app, ["build", "--task", "ner", "--train", str(train), "--base-model", str(folder),
                                      "--profile", "smoke", "--no-prune", "--models-dir", str(tmp_path / "models"),
                                      "--name", "large"])
    assert result.exit_code in (0, 3), result.output  # a tiny random encoder may fail the gate; stages ran
    path = tmp_path / "models" / ("large/manifest.json" if result.exit_code == 0 else "large.gate-report.json")
    manifest = json.loads(path.read_text())
    manifest = manifest.get("manifest", manifest)
    assert manifest["pruning"] == {"skipped": True, "reason": "profile prune: false"}
    assert manifest["profile"]["prune"] is False
    assert "prune" not in manifest["stage_seconds"] and "recovery" not in manifest["stage_seconds"]
    config = json.loads((folder / "config.json").read_text())
    import onnx

    onnx_path = tmp_path / "models" / "large" / manifest["model_file"] if result.exit_code == 0 else None
    if onnx_path is not None:
        graph = onnx.load(str(onnx_path)).graph
        import re

        layers = {m.group(1) for n in graph.node if (m := re.search(r"layer\.(\d+)", n.name))}
        assert len(layers) == config["num_hidden_layers"]


def test_a_no_int8_build_ships_the_fp32_graph_and_says_so(tmp_path):
    from typer.testing import CliRunner

    from presso.cli import app

    folder = base_folder(tmp_path, "bert")
    train = tmp_path / "train.txt"
    conll(train, sentences(160))
    result = CliRunner().invoke(app, ["build", "--task", "ner", "--train", str(train), "--base-model", str(folder),
                                      "--profile", "smoke", "--no-prune", "--no-int8", "--models-dir",
                                      str(tmp_path / "models"), "--name", "large-fp32"])
    assert result.exit_code in (0, 3), result.output
    path = tmp_path / "models" / ("large-fp32/manifest.json" if result.exit_code == 0 else "large-fp32.gate-report.json")
    manifest = json.loads(path.read_text())
    manifest = manifest.get("manifest", manifest)
    quantization = manifest["quantization"]
    assert manifest["profile"]["int8"] is False
    assert quantization["candidate"] == "fp32" and "not asked for" in quantization["chosen_because"]
    assert [c["candidate"] for c in quantization["candidates"]] == ["fp32"]  # no INT8 candidate was built
    if result.exit_code == 0:
        import onnx

        graph = onnx.load(str(tmp_path / "models" / "large-fp32" / manifest["model_file"])).graph
        assert not any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger") for n in graph.node)

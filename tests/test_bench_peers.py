"""The peers benchmark's pieces that need neither infinity-emb nor a load generator: ratios, targets and
agreement from measured levels, the plot, the folder laid out for optimum's engine, the pipeline
baseline's classification endpoint, and wrk's body template."""

from __future__ import annotations

import json
import subprocess

import pytest

from presso.bench import peers, wrk
from presso.bench.serve import LEVELS


def levels(rps: float, p99: float) -> list[dict]:
    return [{"concurrency": c, "throughput_rps": rps * min(c, 8), "p50_ms": p99 / 3, "p95_ms": p99 / 2,
             "p99_ms": p99, "server_cpu_ms_per_request": 1000 / rps} for c in LEVELS]


def fake_results() -> dict:
    return {"presso": {"label": "p", "levels": levels(200.0, 20.0), "answers": ["a", "b", "c", "a"]},
            "infinity_same_onnx": {"label": "o", "levels": levels(100.0, 40.0), "answers": ["a", "b", "c", "b"]},
            "infinity_torch": {"label": "t", "levels": levels(50.0, 30.0), "answers": ["a", "a", "a", "a"]},
            "hf_pipeline": {"label": "h", "levels": levels(20.0, 90.0), "answers": ["a", "b", "c", "a"]}}


def test_ratios_use_the_exact_keys_and_the_best_infinity_configuration(tmp_path):
    results = fake_results()
    report = peers.summarize(results, results["presso"]["answers"])
    assert report["ratios"] == {"presso/infinity_best@32": 2.0, "presso/infinity_best@128": 2.0,
                                "presso/infinity_same_onnx@32": 2.0, "presso/infinity_torch@32": 4.0,
                                "presso/hf_pipeline@32": 10.0}
    assert report["infinity_best"] == {"@32": "infinity_same_onnx", "@128": "infinity_same_onnx"}
    # Presso's p99 (20) against the best-throughput infinity configuration's (40)
    assert report["targets_met"] == {"presso/infinity_best@32": True, "presso/infinity_best@128": True,
                                     "presso/infinity_same_onnx@32": True, "p99_no_higher@32": True,
                                     "p99_no_higher@128": True}
    servers = report["servers"]
    assert [servers[k]["agreement_with_presso"] for k in servers] == [1.0, 0.75, 0.5, 1.0]
    assert all("answers" not in s for s in servers.values())
    report["setup"] = {"model": "sentiment", "cores": 2}
    peers.plot(report, tmp_path / "peers.png")
    assert (tmp_path / "peers.png").stat().st_size > 10_000


def test_a_peer_that_did_not_start_leaves_its_ratio_out_and_its_target_missed():
    results = fake_results()
    results["infinity_same_onnx"] = {"label": "o", "error": "the server exited with status 1"}
    report = peers.summarize(results, results["presso"]["answers"])
    assert "presso/infinity_same_onnx@32" not in report["ratios"]
    assert report["targets_met"]["presso/infinity_same_onnx@32"] is False
    assert report["ratios"]["presso/infinity_best@32"] == 4.0  # torch is the best one left
    assert report["servers"]["infinity_same_onnx"]["error"].startswith("the server exited")


def test_optimum_layout_has_config_labels_tokenizer_and_the_very_same_onnx(fake_models_dir, tmp_path):
    artifact = fake_models_dir / "fake-sentiment"
    config_dir = tmp_path / "ckpt"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"model_type": "bert", "id2label": {"0": "x"}}))
    out = peers.optimum_layout(artifact, config_dir, tmp_path / "optimum")
    config = json.loads((out / "config.json").read_text())
    from presso.core.manifest import parse_manifest

    labels = parse_manifest(artifact).labels
    assert config["id2label"] == {str(i): label for i, label in enumerate(labels)}
    assert config["model_type"] == "bert"
    assert (out / "tokenizer.json").read_bytes() == (artifact / "tokenizer.json").read_bytes()
    assert (out / "model.onnx").resolve() == (artifact / "model.onnx").resolve()


def test_infinity_server_command_binds_loopback_and_runs_the_file_as_given(tmp_path):
    s = peers.infinity_server("infinity_same_onnx", tmp_path / "infinity_emb", tmp_path / "m", "optimum", 9999,
                              tmp_path / "home")
    assert s.cmd[s.cmd.index("--host") + 1] == "127.0.0.1" and "--onnx-disable-optimize" in s.cmd
    assert s.env["HF_HUB_OFFLINE"] == "1" and s.ready_path == "/health"
    assert s.cmd[s.cmd.index("--model-id") + 1] == "." and s.cwd == tmp_path / "m"
    body = s.body[0] + json.dumps("a text") + s.body[1]
    assert json.loads(body) == {"model": "model", "input": ["a text"]}
    torch = peers.infinity_server("infinity_torch", tmp_path / "infinity_emb", tmp_path / "m", "torch", 9999,
                                  tmp_path / "home")
    assert "--onnx-disable-optimize" not in torch.cmd


def test_wrk_sends_the_body_template(tmp_path, monkeypatch):
    seen = {}

    class Proc:
        def communicate(self, timeout):
            return ('WRK_RESULT {"ok": 1, "4xx": 0, "429": 0, "5xx": 0, "requests": 1, "socket_errors": 0, '
                    '"timeouts": 0, "duration_s": 1.0, "p50_ms": 1.0, "p95_ms": 1.0, "p99_ms": 1.0}', "")

    def popen(cmd, env, **kwargs):
        seen.update(env)
        return Proc()

    monkeypatch.setattr(wrk, "wrk_binary", lambda: "wrk")
    monkeypatch.setattr(subprocess, "Popen", popen)
    wrk.run("http://127.0.0.1:1", tmp_path / "t.jsonl", 1, 1, "/classify", body=('{"input": [', "]}"))
    assert (seen["PRESSO_WRK_BODY_PREFIX"], seen["PRESSO_WRK_BODY_SUFFIX"]) == ('{"input": [', "]}")
    assert seen["PRESSO_WRK_PATHS"] == "/classify"


def test_pipeline_baseline_classifies_one_text_or_several(tmp_path):
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from fastapi.testclient import TestClient

    from presso.bench.hf_baseline import create_app
    from tests.fakes import VOCAB, tiny_bert

    bert = tiny_bert()
    config = transformers.BertConfig(**{**bert.config.to_dict(), "num_labels": 3,
                                        "id2label": {0: "negative", 1: "neutral", 2: "positive"}})
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "model")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(_vocab(tmp_path, VOCAB)))
    tokenizer.save_pretrained(tmp_path / "model")
    client = TestClient(create_app(str(tmp_path / "model"), str(tmp_path / "model"), "text-classification"))
    one = client.post("/classify", json={"text": "john smith"}).json()
    assert one["label"] in {"negative", "neutral", "positive"} and 0 < one["score"] <= 1
    several = client.post("/classify", json={"texts": ["john smith", "paris"]}).json()["results"]
    assert len(several) == 2
    with pytest.raises(ValueError):
        create_app(str(tmp_path / "model"), str(tmp_path / "model"), "summarization")


def _vocab(tmp_path, vocab):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    return path

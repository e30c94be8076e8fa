"""Every architecture family through pruning, reload, export, fusion and INT8 on a tiny random
model (the same probe as ``presso bench arch``, which renders the README's support matrix)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("torch")

from presso.compress.arch import SUPPORTED_MODEL_TYPES, UnsupportedArchitecture, adapter_for  # noqa: E402
from presso.bench.arch import (FAMILIES, RESULTS_ENV, SERVE_TEXTS, STAGES, TASKS, probe, render,  # noqa: E402
                               run, save_result, tiny_config)

NO_HEAD_PRUNING = {"albert", "deberta-v2", "mpnet"}
NO_FUSION = {"albert", "deberta-v2", "mpnet"}


@pytest.mark.parametrize("family, task", [(f, t) for f in FAMILIES for t in TASKS])
def test_family_goes_through_every_stage_or_says_why_not(family, task, tmp_path):
    """Writes each result where ``$PRESSO_ARCH_RESULTS`` says: ``presso bench arch --from-results``
    renders the README's matrix from them."""
    result = probe(family, task, tmp_path, artifact_out=tmp_path / "served" / "probe")
    if result["stages"]["serve"] == "ok":  # the matrix's serve cell is checked over real HTTP too
        result["stages"]["serve"] = served_over_http(tmp_path / "served", task)
    if os.environ.get(RESULTS_ENV):
        save_result(result, Path(os.environ[RESULTS_ENV]))
    stages = result["stages"]
    assert not [s for s, c in stages.items() if c.startswith("failed")], stages
    assert stages["head_prune"].startswith("skipped") == (family in NO_HEAD_PRUNING)
    assert stages["fusion"].startswith("skipped") == (family in NO_FUSION)
    for stage in ("fine_tune", "ffn_prune", "layer_drop", "reload", "export", "static_int8", "dynamic_int8",
                  "serve"):
        assert stages[stage] == "ok", (stage, stages[stage])
    # every node pattern the INT8 candidates use matches the exported graph (no stale regex)
    assert all(n > 0 for n in result["details"]["onnx_nodes_matched"].values()), result["details"]
    assert ("token_type_ids" in result["inputs"]) == (family in {"bert", "electra", "albert"})
    assert "failed" not in render([result])


def served_over_http(models_dir: Path, task: str) -> str:
    """``"ok"`` when the real service on 127.0.0.1 answers the task's route for every text with
    exact entity offsets (``/ner``) or a known label (``/classify``), else ``"failed: ..."``."""
    import httpx

    from presso.service.api import create_app
    from tests.conftest import LiveServer, make_settings

    texts = SERVE_TEXTS + ["w5 Zürich w6 東京 w7 שלום"]
    with LiveServer(create_app(make_settings(models_dir))) as server, \
            httpx.Client(base_url=server.url, timeout=30) as client:
        response = client.post("/ner" if task == "ner" else "/classify", json={"texts": texts})
        if response.status_code != 200:
            return f"failed: over HTTP {response.status_code} {response.text[:200]}"
        labels = client.get("/models").json()["models"][0]["manifest"]["labels"]
        for text, result in zip(texts, response.json()["results"]):
            if task == "ner" and any(text[e["start"]:e["end"]] != e["text"] for e in result["entities"]):
                return "failed: over HTTP, entity offsets do not cut the text"
            if task == "classify" and result["label"] not in labels:
                return "failed: over HTTP, unknown label"
    return "ok"


def test_unknown_architecture_is_refused_naming_the_supported_ones():
    import transformers

    with pytest.raises(UnsupportedArchitecture, match="'gpt2' is not supported; supported: albert, bert"):
        adapter_for(transformers.GPT2Config())
    assert {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "albert", "deberta-v2", "mpnet"} <= set(
        SUPPORTED_MODEL_TYPES)
    assert adapter_for(tiny_config("xlm-roberta")).family == "roberta"


def test_the_matrix_is_rendered_from_saved_results(tmp_path):
    results = tmp_path / "results"
    for family in FAMILIES:
        for task in TASKS:
            save_result({"family": family, "task": task, "inputs": ["input_ids"],
                         "stages": {s: "ok" for s in STAGES}}, results)
    (results / "mpnet-classify.json").unlink()
    with pytest.raises(FileNotFoundError, match="mpnet-classify"):
        run(tmp_path / "out", results_dir=results)
    save_result({"family": "mpnet", "task": "classify", "inputs": ["input_ids"],
                 "stages": {**{s: "ok" for s in STAGES}, "fusion": "skipped: no fusion"}}, results)
    report = run(tmp_path / "out", results_dir=results)
    assert len(report["results"]) == len(FAMILIES) * len(TASKS) and "tests/test_arch.py" in report["source"]
    assert "| mpnet | classify | input_ids | ok | ok | ok | ok | ok | ok | skipped [1] |" in \
        (tmp_path / "out" / "arch-support.md").read_text()

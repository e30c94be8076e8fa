"""Every architecture family through pruning, reload, export, fusion and INT8 on a tiny random
model (the same probe as ``presso bench arch``, which renders the README's support matrix)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("torch")

from presso.compress.arch import SUPPORTED_MODEL_TYPES, UnsupportedArchitecture, adapter_for  # noqa: E402
from presso.bench.arch import (FAMILIES, RESULTS_ENV, STAGES, TASKS, probe, render, run,  # noqa: E402
                               save_result, tiny_config)

NO_HEAD_PRUNING = {"albert", "deberta-v2", "mpnet"}
NO_FUSION = {"albert", "deberta-v2", "mpnet"}


@pytest.mark.parametrize("family, task", [(f, t) for f in FAMILIES for t in TASKS])
def test_family_goes_through_every_stage_or_says_why_not(family, task, tmp_path):
    """Writes each result where ``$PRESSO_ARCH_RESULTS`` says: ``presso bench arch --from-results``
    renders the README's matrix from them."""
    result = probe(family, task, tmp_path)
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

"""Every architecture family through pruning, reload, export, fusion and INT8 on a tiny random
model (the same probe as ``presso bench arch``, which renders the README's support matrix)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from presso.compress.arch import SUPPORTED_MODEL_TYPES, UnsupportedArchitecture, adapter_for  # noqa: E402
from presso.bench.arch import FAMILIES, probe, render, tiny_config  # noqa: E402

NO_HEAD_PRUNING = {"albert", "deberta-v2", "mpnet"}
NO_FUSION = {"albert", "deberta-v2", "mpnet"}


@pytest.mark.parametrize("family, task", [(f, "ner") for f in FAMILIES] + [("roberta", "classify"),
                                                                          ("distilbert", "classify"),
                                                                          ("deberta-v2", "classify")])
def test_family_goes_through_every_stage_or_says_why_not(family, task, tmp_path):
    result = probe(family, task, tmp_path)
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

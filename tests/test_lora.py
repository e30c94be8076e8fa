"""LoRA fine-tuning (``--method lora``): adapters on every architecture family's targets, the head and
the casing embedding trained fully, the merge exact, and a build through every stage recording it."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from presso.bench.arch import FAMILIES, tiny_config  # noqa: E402
from tests.test_arch_build import base_folder, conll, sentences  # noqa: E402


def tiny(family: str, task: str):
    import torch
    import transformers

    torch.manual_seed(0)
    config = tiny_config(family)
    config.num_labels = 5 if task == "ner" else 3
    cls = transformers.AutoModelForTokenClassification if task == "ner" else \
        transformers.AutoModelForSequenceClassification
    return cls.from_config(config).eval()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", ["ner", "classify"])
def test_lora_targets_every_family_and_the_merge_is_exact(family, task):
    import torch

    from presso.compress import lora
    from presso.compress.arch import adapter_for
    from presso.compress.profiles import LoraSettings

    model = tiny(family, task)
    total = sum(p.numel() for p in model.parameters())
    adapter = adapter_for(model)
    names = [n for n, _ in model.named_modules()]
    for target in adapter.lora_targets:  # every default target is a real module of this family
        assert any(n == target or n.endswith("." + target) for n in names), (family, target)
    head = {n for n in names if n.startswith(("classifier", "score", "pre_classifier"))}
    assert not any(n.endswith("." + t) for n in head for t in adapter.lora_targets), head  # heads train fully
    wrapped = lora.wrap(model, adapter, LoraSettings(rank=4, alpha=8), task, casing=False)
    counts = lora.parameter_counts(wrapped)
    assert 0 < counts["trainable"] < 0.5 * total
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable)
    assert any("classifier" in n or "score" in n or "out_proj" in n for n in trainable), trainable  # the head
    with torch.no_grad():  # make the update non-zero (B starts at zero) so the merge has something to add
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    wrapped.eval()
    ids = torch.randint(5, 100, (2, 9))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.inference_mode():
        before = wrapped(**batch).logits
    merged = lora.merge(wrapped)
    assert type(merged).__name__ == type(model).__name__
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert all(p.requires_grad for p in merged.parameters())  # recovery fine-tunes every weight
    with torch.inference_mode():
        assert torch.allclose(merged(**batch).logits, before, atol=1e-4)


def test_casing_rows_train_with_lora():
    from presso.compress import lora
    from presso.compress.arch import adapter_for
    from presso.compress.profiles import LoraSettings
    from presso.compress.train import enable_casing

    model = tiny("bert", "ner")
    enable_casing(model)
    wrapped = lora.wrap(model, adapter_for(model), LoraSettings(), "ner", casing=True)
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert any("token_type_embeddings" in n for n in trainable)
    assert not any("word_embeddings" in n for n in trainable)


def test_unknown_target_module_is_an_error_naming_it():
    from presso.compress import lora
    from presso.compress.arch import adapter_for
    from presso.compress.profiles import LoraSettings

    model = tiny("bert", "classify")
    with pytest.raises(ValueError, match="no_such_proj"):
        lora.wrap(model, adapter_for(model), LoraSettings(target_modules=["no_such_proj"]), "classify", False)


def test_a_lora_build_runs_every_stage_and_records_the_method(tmp_path):
    from typer.testing import CliRunner

    from presso.cli import app

    folder = base_folder(tmp_path, "distilbert")
    train = tmp_path / "train.txt"
    conll(train, sentences(160))
    result = CliRunner().invoke(app, ["build", "--task", "ner", "--train", str(train), "--base-model", str(folder),
                                      "--profile", "smoke", "--method", "lora", "--models-dir",
                                      str(tmp_path / "models"), "--name", "lora-ner"])
    assert result.exit_code in (0, 3), result.output  # a tiny random encoder may fail the gate; stages ran
    path = tmp_path / "models" / ("lora-ner/manifest.json" if result.exit_code == 0 else "lora-ner.gate-report.json")
    manifest = json.loads(path.read_text())
    manifest = manifest.get("manifest", manifest)
    ft = manifest["fine_tuning"]
    assert ft["method"] == "lora" and 0 < ft["trainable_parameters"] < ft["total_parameters"]
    assert ft["lora"]["target_modules"] == ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"]
    assert ft["lora"]["merged"] == "merge_and_unload"
    assert ft["learning_rate"] == ft["lora"]["learning_rate"] and ft["peak_rss_bytes"] > 10_000_000
    assert ft["seconds"] == manifest["stage_seconds"]["fine_tune"]
    assert manifest["profile"]["method"] == "lora"
    assert {"fp32", "pruned_fp32", "int8"} <= set(manifest["stages"])


def test_lora_with_a_fine_tuned_checkpoint_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from presso.cli import app

    train = tmp_path / "train.txt"
    conll(train, sentences(20))
    result = CliRunner().invoke(app, ["build", "--task", "ner", "--train", str(train), "--fine-tuned", str(tmp_path),
                                      "--method", "lora"])
    assert result.exit_code == 2 and "--method lora" in result.output


def test_lora_report_gaps_and_table(tmp_path, fake_models_dir, monkeypatch):
    from presso.bench import lora as bench_lora
    from presso.core.manifest import parse_manifest

    def manifest_file(name: str, task: str, method: str, shipped: float) -> object:
        metric = bench_lora.TASKS[task]
        base = parse_manifest(fake_models_dir / ("fake-ner" if task == "ner" else "fake-sentiment")).to_json()
        base.update(metric=metric, summary={f"test_{metric}_fp32": shipped + 0.01, f"test_{metric}_int8": shipped,
                                            "int8_variant": "static"},
                    stage_seconds={"fine_tune": 100.0, "recovery": 50.0},
                    fine_tuning={"method": method, "trainable_parameters": 10 if method == "lora" else 1000,
                                 "total_parameters": 1010 if method == "lora" else 1000})
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(base))
        return path

    monkeypatch.setattr(bench_lora, "_probe_subprocess", lambda task, method, steps, settings=None: {
        "seconds_per_step": 1.0 if method == "full" else 0.6, "peak_rss_bytes": 2000 if method == "full" else 1500,
        "trainable_parameters": 0, "total_parameters": 0})
    manifests = {("ner", "full"): manifest_file("nf", "ner", "full", 0.88),
                 ("ner", "lora"): manifest_file("nl", "ner", "lora", 0.872),
                 ("classify", "full"): manifest_file("cf", "classify", "full", 0.78),
                 ("classify", "lora"): manifest_file("cl", "classify", "lora", 0.765)}
    report = bench_lora.run(manifests, tmp_path / "out", probe_steps=5)
    s = report["summary"]
    assert s["ner_lora_gap_points"] == 0.8 and s["ner_within_target"] is True
    assert s["classify_lora_gap_points"] == 1.5 and s["classify_within_target"] is False
    assert s["ner_peak_rss_ratio_lora_vs_full"] == 0.75 and s["ner_step_time_ratio_lora_vs_full"] == 0.6
    assert "| ner | lora | 10 of 1,010 |" in (tmp_path / "out" / "lora.md").read_text()
    variant = {**manifests, ("ner", "lora-all"): manifest_file("na", "ner", "lora", 0.879)}
    with_variant = bench_lora.run(variant, tmp_path / "out2", probe_steps=5)
    assert with_variant["summary"]["ner_lora_gap_points"] == 0.8  # the summary's pair stays full vs lora
    assert set(with_variant["builds"]["ner"]) == {"full", "lora", "lora-all"}
    with pytest.raises(ValueError, match="given as 'full'"):
        bench_lora.run({("ner", "full"): manifests[("ner", "lora")]}, tmp_path / "out")

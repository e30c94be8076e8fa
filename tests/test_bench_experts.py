"""``presso bench experts`` on fake models over the real test splits: every configuration on every
test set, the summary's keys, the route the benchmark writes."""

from __future__ import annotations

import json

import pytest

from tests.fakes import write_artifact

WNUT_FAKE = ["O", "B-geo-loc", "I-geo-loc", "B-person", "I-person"]


def test_bench_experts_reports_every_configuration(tmp_path):
    pytest.importorskip("onnx")
    from presso.bench import experts

    try:
        experts.test_sets()
    except Exception as exc:  # the data packages come with make install
        pytest.skip(f"CoNLL-2003 / WNUT-16 data not installed: {exc}")
    models = tmp_path / "models"
    write_artifact(models, "ner", "ner")
    write_artifact(models, "wnut", "ner", labels=WNUT_FAKE)
    write_artifact(models, "news-tweets", "ner")
    write_artifact(models, "domains", "classify", labels=["news", "social"])
    report = experts.run(models, tmp_path / "out", batch=64, concurrency=2)
    saved = json.loads((tmp_path / "out" / "experts.json").read_text())
    assert saved["summary"] == report["summary"]
    assert set(report["results"]) == {"news", "social", "mixed"}
    for row in report["results"].values():
        assert set(experts.CONFIGS) <= set(row) and 0.0 <= row["router_accuracy"] <= 1.0
    summary = report["summary"]
    assert isinstance(summary["router_beats_single_experts_on_mixed"], bool)
    assert set(summary["per_domain"]) == {"news", "social"}
    for domain, by_k in summary["gap_to_own_expert_95ci"].items():
        for k, gap in by_k.items():
            assert abs(gap["gap_points"] - summary["per_domain"][domain][f"{k}_minus_own_expert_points"]) <= 0.02
            assert gap["low_points"] <= gap["high_points"]
    assert report["test_sets"]["mixed"]["domains"]["news"] == report["test_sets"]["mixed"]["domains"]["social"]
    assert "| mixed" in (tmp_path / "out" / "experts.md").read_text()


def test_bench_experts_names_missing_models(tmp_path):
    from presso.bench import experts

    write_artifact(tmp_path, "ner", "ner")
    with pytest.raises(ValueError, match=r"no artifacts named \['wnut', 'domains'\]"):
        experts.run(tmp_path, tmp_path / "out")

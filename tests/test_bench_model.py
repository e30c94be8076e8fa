"""The model benchmark's report: summary keys and ratios, markdown table and Pareto plot, from
synthetic measurements (the real run needs built models)."""

from __future__ import annotations

import pytest

from presso.bench import model as bench_model


def variant(size: int, score: float, seq_per_s: float, metric: str) -> dict:
    shape = {"p50_ms": 10.0, "p95_ms": 12.0, "seq_per_s": seq_per_s}
    return {"runtime": "onnxruntime", "size_bytes": size, f"test_{metric}": score,
            "fixed_shapes": {"1x32": shape, "8x128": shape, "32x64": shape},
            "real_sentences": {"batch_1": {"p50_ms": 2.0}, "batch_32": {"p50_ms": 20.0, "seq_per_s": 1600.0}}}


def task(metric: str) -> dict:
    return {"metric": metric, "shipped_variant": "static", "test_examples": 100, "variants": {
        "pytorch_fp32": variant(90_000_000, 0.85, 50.0, metric),
        "pruned_int8_static": variant(20_000_000, 0.842, 210.0, metric),
        "shipped": variant(20_000_000, 0.842, 210.0, metric)},
        "paired_speedup_8x128": {"median": 4.2, "rounds": [4.1, 4.2, 4.3], "runs_per_round": 5}}


def test_summary_has_the_exact_keys_and_ratios(tmp_path):
    report = {"tasks": {"ner": task("f1"), "sentiment": task("accuracy")}}
    report["summary"] = bench_model.summarize(report["tasks"])
    assert report["summary"]["ner_speedup_vs_torch_fp32_8x128"] == 4.2
    assert report["summary"]["ner_size_ratio"] == pytest.approx(0.2222, abs=1e-4)
    assert report["summary"]["ner_f1_drop_points"] == 0.8
    assert report["summary"]["sentiment_accuracy_drop_points"] == 0.8
    table = bench_model.markdown(report)
    assert "| shipped | 20.0 | 0.8420 |" in table and "ner_f1_drop_points" in table
    bench_model.plot(report, tmp_path / "model-bench.png")
    assert (tmp_path / "model-bench.png").stat().st_size > 10_000


def test_missing_work_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--work-dir"):
        bench_model.variants(tmp_path / "nowhere", tmp_path / "artifact", "ner")


def test_paired_speedup_alternates_and_takes_the_median_ratio():
    import time

    calls = []

    def slow(_batch):
        calls.append("slow")
        time.sleep(0.004)

    def fast(_batch):
        calls.append("fast")
        time.sleep(0.001)

    result = bench_model.paired_speedup(slow, fast, runs=3, rounds=3, shape=(1, 4))
    assert len(result["rounds"]) == 3 and 2.0 < result["median"] < 6.0
    assert calls[:4] == ["slow"] * 4 and calls[4:8] == ["fast"] * 4  # warm-up + 3 runs, then the other


def test_scale_section_prunes_quantizes_and_times_each_shape(tmp_path, monkeypatch):
    """The scale path on tiny stand-ins of both shapes (the real ones are full-size, minutes)."""
    pytest.importorskip("torch")
    import transformers

    from presso.bench import scale

    tiny = {"bert-base": transformers.BertConfig(vocab_size=1200, hidden_size=32, num_hidden_layers=3,
                                                 num_attention_heads=4, intermediate_size=64, num_labels=9),
            "deberta-v3-small": transformers.DebertaV2Config(
                vocab_size=1200, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                relative_attention=True, pos_att_type=["p2c", "c2p"], position_buckets=16,
                max_relative_positions=-1, type_vocab_size=0, num_labels=9)}
    monkeypatch.setattr(scale, "scale_config", lambda name: tiny[name])
    out = scale.run_scale(runs=2)
    bert, deberta = out["models"]["bert-base"], out["models"]["deberta-v3-small"]
    for m in (bert, deberta):
        assert set(m["variants"]) == {"pytorch_fp32", "onnx_pruned_fp32", "pruned_int8_static",
                                      "pruned_int8_static_ffn_fp32", "pruned_int8_dynamic_per_channel"}
        assert m["pruning"]["intermediate_size"]["after"] < m["pruning"]["intermediate_size"]["before"]
        assert m["pruning"]["parameters_after"] < m["config"]["parameters"]
        assert m["config"]["layers"] == 3 and m["config"]["ffn"] == 64  # the shape before pruning
        assert all(v > 0 for v in m["speedup_vs_torch_fp32_8x128"].values())
    assert bert["pruning"]["heads_skipped_because"] is None
    assert deberta["pruning"]["heads_skipped_because"]  # DeBERTa-v2 cannot prune heads: recorded, not a crash
    from presso.bench.model import markdown, scale_summary

    assert set(scale_summary(out)) == {"bert_base_pruned_int8_speedup_vs_torch_fp32_8x128",
                                       "deberta_v3_small_pruned_int8_speedup_vs_torch_fp32_8x128"}
    assert "deberta-v3-small" in markdown({"tasks": {}, "summary": {}, "scale": out})

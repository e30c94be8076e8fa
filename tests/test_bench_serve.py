"""The serve benchmark's pieces that need no load generator: ratios and targets from measured
levels, the plot, offline throughput on a (fake) artifact, and wrk result parsing."""

from __future__ import annotations

import pytest

from presso.bench import offline, serve, wrk
from presso.service.settings import Settings


def level(c: int, rps: float, p50: float) -> dict:
    return {"concurrency": c, "throughput_rps": rps, "p50_ms": p50, "p95_ms": p50 * 2, "p99_ms": p50 * 3,
            "mean_batch_size": 1.0, "batch_size_le": {"1.0": 5, "2.0": 1, "+Inf": 0}}


def fake_variants() -> dict:
    levels = {"A": [level(c, 100.0 * c ** 0.5, 3.0) for c in serve.LEVELS],
              "B": [level(c, 100.0, 3.0) for c in serve.LEVELS],
              "C": [level(c, 10.0, 30.0) for c in serve.LEVELS]}
    throughput = {"file_order": {"1": 500.0, "4": 600.0}, "length_sorted": {"1": 700.0, "4": 1200.0}}
    throughput["best"] = {"order": "file_order", "batch_size": 4, "seq_per_s": 600.0, "workers": 2}
    return {**{k: {"label": k, "levels": v} for k, v in levels.items()}, "D": {"label": "D", "seq_per_s": throughput}}


def test_ratios_use_the_exact_keys_and_targets(tmp_path, monkeypatch):
    variants = fake_variants()
    variants["A"]["levels"][-1].update(event_loop_cpu_cores=0.3, loadgen_cpu_cores=0.1)  # of 2 cores
    monkeypatch.setattr("presso.service.settings.available_cores", lambda: 2)
    report = serve.summarize(variants, {"p50_ms": 2.0}, {"name": "ner", "task": "token-classification"},
                             Settings(), 15, 3, 1000)
    assert report["ratios"] == {"A/B@32": pytest.approx(5.66, abs=0.01), "A/C@32": pytest.approx(56.57, abs=0.01),
                                "A/D@128": pytest.approx(1.886, abs=0.001), "A_p50@1/single": 1.5}
    assert report["targets_met"] == {"A/B@32": True, "A/C@32": True, "A/D@128": True, "A_p50@1/single": False}
    assert report["context_ratios"]["A/D_length_sorted@128"] == pytest.approx(0.943, abs=0.001)
    # the event loop and wrk took 0.4 of 2 cores at 128 clients: inference had 80% of what D had
    assert report["context_ratios"]["A/D@128_cores_left"] == 0.8
    assert report["context_ratios"]["A/D@128_per_core_left"] == pytest.approx(1.886 / 0.8, abs=0.002)
    serve.plot(report, tmp_path / "serve-bench.png")
    assert (tmp_path / "serve-bench.png").stat().st_size > 10_000


def test_offline_references_run_on_an_artifact(fake_models_dir):
    model = offline.load(fake_models_dir / "fake-ner", intra_op_threads=1)
    texts = ["john smith lives in paris", "new york", "the day is good"] * 20
    out = offline.throughput(model, texts, workers=2, seconds_per_size=0.05)
    assert set(out["file_order"]) == {str(b) for b in offline.BATCH_SIZES}
    assert out["best"]["seq_per_s"] == max(out["file_order"].values()) > 0
    merged = offline.best_of(out, out)
    assert merged["best"] == out["best"]
    single = offline.best_single_call_ms(fake_models_dir / "fake-ner", texts[:5])
    assert single["p50_ms"] > 0 and single["intra_op_threads"] in (0, 1)


def test_wrk_result_line_is_parsed_or_reported_missing():
    line = ('WRK_RESULT {"ok": 5, "4xx": 0, "429": 0, "5xx": 0, "requests": 5, "socket_errors": 0, "timeouts": 0, '
            '"duration_s": 1.0, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0}')
    assert wrk.result("Running 1s test\n" + line)["ok"] == 5
    with pytest.raises(RuntimeError):
        wrk.result("unable to connect")


def test_cost_model_fits_fixed_and_per_token_cost(fake_models_dir):
    model = offline.load(fake_models_dir / "fake-ner", intra_op_threads=1)
    cost = offline.cost_model(model, ["john smith lives in paris", "new york"], workers=2, seconds_per_shape=0.02,
                              shapes=((1, 8), (4, 8), (8, 32), (16, 16)))
    assert len(cost["points"]) == 4 and all(p["ms"] > 0 for p in cost["points"])
    # a tiny fake model is nearly all fixed cost: its per-token slope can fit to about zero either way
    assert cost["fixed_ms"] > 0 and cost["median_relative_error"] >= 0 and cost["mean_tokens"] > 2
    assert cost["workers"] == 2


def test_batching_bound_and_its_ratio():
    cost = {"fixed_ms": 1.0, "per_token_ms": 0.1, "mean_tokens": 20.0, "workers": 2}
    bound = offline.batching_bound(cost, clients=32, max_batch_size=32)
    # alone 1 + 2 = 3 ms; 16 per call (32 clients over 2 workers): 1/16 + 2 = 2.0625 ms
    assert bound["batch"] == 16 and bound["bound"] == pytest.approx(3 / 2.0625, abs=1e-3)
    assert offline.batching_bound(cost, clients=32, max_batch_size=4)["batch"] == 4
    report = serve.summarize(fake_variants(), {"p50_ms": 2.0}, {"name": "ner", "task": "token-classification"},
                             Settings(), 15, 3, 1000, cost=cost)
    assert report["ratios"]["A/B@32_of_bound"] == pytest.approx(5.66 / 1.455, abs=0.01)
    assert report["targets"]["A/B@32_of_bound"] == ">= 0.9"
    assert report["cost_model"]["batching_bound@32"]["bound"] == pytest.approx(1.455, abs=1e-3)


def test_cost_fit_recovers_fixed_and_per_token_cost_across_scales():
    points = [{"batch": b, "tokens": t, "ms": 2.0 + 0.15 * b * t} for b in (1, 4, 16, 32) for t in (8, 64)]
    points[-1]["ms"] *= 1.3  # one large, slow outlier must not decide the fixed cost
    fixed, per_token, error = offline.fit_cost(points)
    assert 1.5 < fixed < 2.5 and 0.13 < per_token < 0.2 and error < 0.05


def test_request_path_floor_bounds_the_one_client_ratio():
    floor = {"p50_ms": 1.0, "p99_ms": 2.0, "requests": 10, "other_answers": 0, "what": "404 path"}
    report = serve.summarize(fake_variants(), {"p50_ms": 2.0}, {"name": "ner", "task": "token-classification"},
                             Settings(), 15, 3, 1000, floor=floor)
    # (single 2.0 + path 1.0) / single 2.0: no server of this path can show less than 1.5
    assert report["context_ratios"]["A_p50@1/single_floor"] == 1.5
    assert report["request_path_floor"] == floor


def test_in_process_single_runs_texts_through_the_data_plane(fake_models_dir, tmp_path):
    only = tmp_path / "models"
    only.mkdir()
    (only / "fake-ner").symlink_to(fake_models_dir / "fake-ner")
    out = serve.in_process_single(only, ["john smith lives in paris", "new york"] * 10)
    assert out["texts"] == 20 and out["p50_ms"] > 0


def test_paired_lone_latency_decides_the_one_client_ratio():
    lone = {"median_ratio": 1.2, "rounds": [], "seconds_per_round": 4.0, "what": "paired"}
    report = serve.summarize(fake_variants(), {"p50_ms": 2.0}, {"name": "ner", "task": "token-classification"},
                             Settings(), 15, 3, 1000, lone=lone)
    assert report["ratios"]["A_p50@1/single"] == 1.2 and report["targets_met"]["A_p50@1/single"] is True
    assert report["context_ratios"]["A_p50@1/single_unpaired"] == 1.5  # A's level p50 3.0 / single 2.0
    assert report["lone_latency_paired"] == lone


@pytest.mark.skipif(__import__("shutil").which("wrk") is None, reason="needs wrk")
def test_paired_lone_latency_alternates_http_and_the_single_call(live_server, fake_models_dir, tmp_path):
    texts = ["john smith lives in paris", "new york", "the day is good"] * 50
    model = offline.load(fake_models_dir / "fake-ner", intra_op_threads=0)
    out = serve.paired_lone_latency(live_server.url, wrk.write_texts(texts, tmp_path / "t.jsonl"), model, texts,
                                    rounds=3, seconds=1)
    assert len(out["rounds"]) == 3 and out["median_ratio"] == pytest.approx(sorted(r["ratio"] for r in out["rounds"])[1], abs=0.006)
    for row in out["rounds"]:
        assert row["http_p50_ms"] > 0 and row["single_p50_ms"] > 0 and 0 < row["texts"] <= len(texts)
        assert row["server_inference_mean_ms"] > 0 and row["single_inference_mean_ms"] > 0

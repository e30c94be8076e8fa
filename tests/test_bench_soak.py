"""The soak benchmark end to end on fake models, a few seconds long (the committed report is the
10-minute run on the real models)."""

from __future__ import annotations

import shutil

import pytest


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")
def test_short_soak_writes_the_report_with_the_exact_keys(fake_models_dir, tmp_path):
    from presso.bench import soak

    report = soak.run(fake_models_dir, tmp_path, segments=2, segment_s=2, capacity_s=2, sample_s=0.5)
    summary = report["summary"]
    assert summary["errors"] == 0 and summary["requests"] > 0
    assert isinstance(summary["rss_growth_second_half"], float)
    assert 0.05 < summary["mean_load_fraction"] < 1.5
    assert (tmp_path / "soak.json").exists() and (tmp_path / "soak.png").exists()


def test_mixed_texts_have_random_lengths():
    pytest.importorskip("presso.compress.data")
    try:
        texts = __import__("presso.bench.soak", fromlist=["mixed_texts"]).mixed_texts(200)
    except FileNotFoundError:
        pytest.skip("CoNLL-2003 data package not installed")
    lengths = sorted(len(t) for t in texts)
    assert lengths[0] * 5 < lengths[-1]

"""The accuracy gate: passes within bounds, names the stage that lost the most, refuses low INT8
agreement, and makes `presso build` exit non-zero."""

from __future__ import annotations

import pytest

from presso.compress.gate import AccuracyGateError, check_gate


def stages(fp32: float, pruned: float, onnx: float, int8: float, agreement: float = 0.999) -> dict:
    out = {name: {"metrics": {"f1": v}} for name, v in
           (("fp32", fp32), ("pruned_fp32", pruned), ("pruned_onnx_fp32", onnx), ("int8", int8))}
    out["int8"]["agreement_with_previous"] = agreement
    return out


def test_gate_passes_within_bounds():
    gate = check_gate(stages(0.85, 0.846, 0.846, 0.845), "f1", 1.0, 0.99)
    assert gate["passed"] and gate["drop_points"] == 0.5 and not gate["failures"]
    assert [s["drop_points_vs_previous"] for s in gate["per_stage"]] == [None, 0.4, 0.0, 0.1]


def test_gate_names_the_stage_that_lost_the_most():
    gate = check_gate(stages(0.85, 0.835, 0.835, 0.832), "f1", 1.0, 0.99)
    assert not gate["passed"] and gate["drop_points"] == 1.8
    assert gate["failures"][0]["stage"] == "pruned_fp32" and "pruning and recovery" in gate["message"]


def test_gate_refuses_int8_that_disagrees_with_its_fp32_source():
    gate = check_gate(stages(0.85, 0.85, 0.85, 0.85, agreement=0.97), "f1", 1.0, 0.99)
    assert not gate["passed"] and gate["failures"][0]["check"] == "int8_agreement"


def test_build_exits_3_when_the_gate_fails(monkeypatch, tmp_path):
    pytest.importorskip("typer")
    from typer.testing import CliRunner

    import presso.compress.datasets
    import presso.compress.pipeline
    from presso.cli import app

    report = {**check_gate(stages(0.85, 0.80, 0.80, 0.80), "f1", 1.0, 0.99), "report_path": "models/ner.gate-report.json"}

    def failing_build(*_args, **_kwargs):
        raise AccuracyGateError(report)

    monkeypatch.setattr(presso.compress.datasets, "load_conll2003", lambda: object())
    monkeypatch.setattr(presso.compress.pipeline, "build", failing_build)
    result = CliRunner().invoke(app, ["build", "ner", "--models-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert "pruned_fp32" in result.output and "gate-report.json" in result.output

"""The presso command line: argument checks and data errors, without training."""

from __future__ import annotations

from typer.testing import CliRunner

from presso.cli import app

runner = CliRunner()


def test_bad_user_data_names_file_and_line(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("John B-PER\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("John B-PER\nSmith I-PER extra BOGUS-TAG\n")
    result = runner.invoke(app, ["build", "--task", "ner", "--train", str(bad), "--validation", str(good),
                                 "--test", str(good), "--models-dir", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert f"{bad}:2: tag 'BOGUS-TAG' is not O, B-TYPE or I-TYPE" in result.output


def test_task_needs_all_three_files(tmp_path):
    result = runner.invoke(app, ["build", "--task", "classify", "--train", str(tmp_path / "x.csv")])
    assert result.exit_code != 0 and "--task needs --train, --validation and --test" in result.output


def test_unknown_profile_is_refused():
    result = runner.invoke(app, ["build", "ner", "--profile", "huge"])
    assert result.exit_code != 0 and "unknown profile" in result.output


def test_report_renders_stage_tables(tmp_path):
    import json

    d = tmp_path / "ner"
    d.mkdir()
    stage = {"runtime": "onnxruntime", "metrics": {"f1": 0.81}, "size_bytes": 2_000_000,
             "latency_ms": {"batch_1": {"p50_ms": 1.0}, "batch_8": {"p50_ms": 5.0}}}
    (d / "manifest.json").write_text(json.dumps({"name": "ner", "task": "token-classification", "metric": "f1",
                                                 "profile": {"name": "default"}, "stages": {"int8": stage},
                                                 "summary": {"test_f1_int8": 0.81}, "stage_seconds": {"x": 60}}))
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0
    assert "| int8 | onnxruntime | 0.8100 | 2.0 | 1.0 | 5.0 |" in result.output

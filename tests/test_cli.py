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


def test_task_needs_a_training_file(tmp_path):
    result = runner.invoke(app, ["build", "--task", "classify"])
    assert result.exit_code != 0 and "--task needs --train" in result.output


def test_missing_column_lists_the_columns_found(tmp_path):
    p = tmp_path / "intents.csv"
    p.write_text("utterance,intent\nbook a flight,travel\n")
    result = runner.invoke(app, ["build", "--task", "classify", "--train", str(p), "--models-dir", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [f"error: {p}: no column 'text' (columns: 'utterance', 'intent'); name it with --text-column"]


def test_unknown_profile_is_refused():
    result = runner.invoke(app, ["build", "ner", "--profile", "huge"])
    assert result.exit_code != 0 and "unknown profile" in result.output


# the fields every manifest has (presso.core.manifest.Manifest)
CONTRACT = {"name": "ner", "task": "token-classification", "labels": ["O", "B-PER", "I-PER"], "max_seq_len": 128,
            "model_file": "model.onnx", "model_sha256": "ab" * 32}


def test_report_renders_stage_tables(tmp_path):
    import json

    d = tmp_path / "ner"
    d.mkdir()
    stage = {"runtime": "onnxruntime", "metrics": {"f1": 0.81}, "size_bytes": 2_000_000,
             "latency_ms": {"batch_1": {"p50_ms": 1.0}, "batch_8": {"p50_ms": 5.0}}}
    (d / "manifest.json").write_text(json.dumps({**CONTRACT, "metric": "f1",
                                                 "profile": {"name": "default"}, "stages": {"int8": stage},
                                                 "summary": {"test_f1_int8": 0.81}, "stage_seconds": {"x": 60}}))
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0
    assert "| int8 | onnxruntime | 0.8100 | 2.0 | 1.0 | 5.0 |" in result.output
    (d / "manifest.json").write_text(json.dumps({"name": "ner", "task": "summarization"}))
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2  # a broken manifest: one line naming the file and the fields
    (line,) = result.output.strip().splitlines()
    assert "ner/manifest.json" in line and "task" in line and "labels" in line, result.output


def test_serve_without_models_says_to_build_one(tmp_path):
    result = runner.invoke(app, ["serve", "--models-dir", str(tmp_path)])
    assert result.exit_code == 2  # not 3, which means an accuracy-gate refusal
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no models to serve" in lines[0] and "presso build" in lines[0], result.output


def test_ner_quality_report_from_manifests(tmp_path):
    import json

    metrics = {"f1": 0.86, "precision": 0.85, "recall": 0.87, "per_type": {"PER": {"f1": 0.95}}}
    argmax = {**metrics, "f1": 0.855}
    stages = {s: {"metrics": metrics, "metrics_argmax_decoding": argmax} for s in ("fp32", "int8")}
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({**CONTRACT, "decoding": "iob2_viterbi", "casing": {"enabled": True}, "seed": 13,
                                    "profile": {"name": "default"}, "stages": stages}))
    http = tmp_path / "http.json"
    http.write_text(json.dumps({"examples": 10, "metrics": metrics, "models": {}}))
    result = runner.invoke(app, ["bench", "ner-quality", "--manifest", f"cased={manifest}", "--http-eval",
                                 f"cased={http}", "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "ner-quality.json").read_text())
    assert report["summary"]["cased"] == {"int8_f1": 0.86, "decoding": "iob2_viterbi", "http_f1": 0.86,
                                          "viterbi_gain_points": {"fp32": 0.5, "int8": 0.5}}
    assert len(report["rows"]) == 4 and "| cased | on | iob2_viterbi | int8 | 0.8600 |" in (
        tmp_path / "out" / "ner-quality.md").read_text()
    bad = runner.invoke(app, ["bench", "ner-quality", "--manifest", "no-equals-sign"])
    assert bad.exit_code == 2 and "LABEL=FILE" in bad.output


def test_a_csv_with_other_columns_and_no_validation_file_builds_with_one_command(tmp_path, monkeypatch):
    """The CLI reads the user's layout, holds out validation, reuses it as test, and hands typed
    splits to the pipeline (training itself is covered by the end-to-end test)."""
    import presso.compress.pipeline

    p = tmp_path / "intents.csv"
    p.write_text("id,utterance,intent\n" + "".join(f"{i},text number {i},{'abcd'[i % 4]}\n" for i in range(200))
                 + "200,,a\n")
    seen = {}

    def fake_build(splits, name, models_dir, profile, work_dir, reuse, base=None, **_):
        seen.update(splits=splits, name=name, seed=profile.seed)
        return {"summary": {"ok": True}}

    monkeypatch.setattr(presso.compress.pipeline, "build", fake_build)
    result = runner.invoke(app, ["build", "--task", "classify", "--train", str(p), "--text-column", "utterance",
                                 "--label-column", "intent", "--seed", "7", "--name", "intents",
                                 "--models-dir", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    splits = seen["splits"]
    assert seen["name"] == "intents" and seen["seed"] == 7
    assert splits.labels == ["a", "b", "c", "d"] and splits.sizes() == {"train": 180, "validation": 20, "test": 20}
    assert splits.notes["validation"]["seed"] == 7 and splits.notes["test"]["same_as"] == "validation"
    assert splits.notes["rows"]["train"] == {"rows": 201, "kept": 200, "skipped_empty_text": 1}
    assert splits.notes["layout"]["text_column"] == "utterance"


def test_report_of_an_empty_directory_is_a_one_line_error(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: no model artifacts in {tmp_path} (no */manifest.json); build one first: presso build ner"]


def test_serve_with_a_broken_artifact_is_one_line(fake_models_dir, tmp_path):
    import json
    import shutil

    shutil.copytree(fake_models_dir / "fake-ner", tmp_path / "fake-ner")
    path = tmp_path / "fake-ner" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "manifest_version": 3}))
    result = runner.invoke(app, ["serve", "--models-dir", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output  # startup log lines may come before it
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and "fake-ner/manifest.json" in line and "manifest_version 3 is not supported" in line

"""ONNX Runtime distribution check, artifact validation and settings from the environment."""

from __future__ import annotations

import importlib.metadata
import json
import shutil

import pytest

from presso.core import runtime
from presso.core.manifest import ArtifactError, read_artifact as read_manifest
from presso.service.registry import load_models


def fake_installed(monkeypatch, names):
    real = importlib.metadata.distribution

    def distribution(name):
        if name in runtime.ORT_DISTRIBUTIONS:
            if name in names:
                return object()
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)


@pytest.mark.parametrize("installed, ok", [
    (["onnxruntime"], True), (["onnxruntime-gpu"], True),
    (["onnxruntime", "onnxruntime-gpu"], False), ([], False),
])
def test_exactly_one_onnxruntime_distribution(monkeypatch, installed, ok):
    fake_installed(monkeypatch, installed)
    if ok:
        assert runtime.onnxruntime_distribution() == installed[0]
    else:
        with pytest.raises(runtime.RuntimeSetupError, match="exactly one"):
            runtime.onnxruntime_distribution()


def test_cpu_distribution_selects_cpu_provider():
    assert runtime.select_providers("onnxruntime") == ["CPUExecutionProvider"]


def test_artifact_checksum_and_manifest_are_validated(fake_models_dir, tmp_path):
    bad = tmp_path / "models"
    shutil.copytree(fake_models_dir / "fake-ner", bad / "fake-ner")
    read_manifest(bad / "fake-ner")
    (bad / "fake-ner" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="sha256"):
        load_models(bad, ["CPUExecutionProvider"], 1)
    manifest = json.loads((bad / "fake-ner" / "manifest.json").read_text())
    del manifest["labels"]
    (bad / "fake-ner" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="labels: Field required"):
        read_manifest(bad / "fake-ner")
    with pytest.raises(ArtifactError, match="no model artifacts"):
        load_models(tmp_path / "empty", ["CPUExecutionProvider"], 1)


def test_settings_come_from_prefixed_environment(monkeypatch):
    from presso.service.settings import Settings

    monkeypatch.setenv("PRESSO_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("PRESSO_MAX_WAIT_MS", "2.5")
    s = Settings()
    assert s.max_batch_size == 7 and s.max_wait_ms == 2.5
    monkeypatch.setenv("PRESSO_MAX_BATCH_SIZE", "0")
    with pytest.raises(ValueError):
        Settings()


def test_readme_lists_every_setting_with_its_default():
    from pathlib import Path

    from presso.service.settings import Settings

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        default = str(field.default).lower() if isinstance(field.default, bool) else field.default
        assert f"| `PRESSO_{name.upper()}` | `{default}` |" in readme, name


def test_inference_workers_default_to_one_per_core_left_by_intra_op_threads(tmp_path):
    from presso.service.settings import Settings

    assert Settings(inference_threads=3).inference_workers() == 3
    assert Settings(intra_op_threads=0).inference_workers() == 1
    assert Settings(intra_op_threads=1).inference_workers() >= 1


def test_unknown_presso_variables_are_reported_and_bad_values_are_one_line_errors(monkeypatch):
    from typer.testing import CliRunner

    from presso.cli import app
    from presso.service.settings import unknown_variables

    assert unknown_variables({"PRESSO_MAX_BATCH": "3", "PRESSO_PORT": "1", "PRESSO_PODMAN_DIR": "/x",
                              "PRESSO_WRK_TEXTS": "t", "HOME": "/root"}) == ["PRESSO_MAX_BATCH"]
    monkeypatch.setenv("PRESSO_CLASSIFY_LONG_TEXT", "foo")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "PRESSO_CLASSIFY_LONG_TEXT" in result.output
    assert "Traceback" not in result.output


def test_a_cross_field_settings_error_is_one_line_too(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from presso.cli import app

    monkeypatch.setenv("PRESSO_API_KEYS_FILE", str(tmp_path / "missing"))
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "api_keys_file" in result.output and "Traceback" not in result.output


def test_reference_outputs_are_checked_at_load(tmp_path):
    """An artifact's recorded logits are re-run at load; a machine that computes them otherwise
    (here: tampered references) gets the model refused, naming it and the largest difference."""
    import hashlib
    import json

    from presso.core.encoding import TextEncoder
    from presso.core.reference import reference_outputs
    from presso.service.registry import LoadedModel
    from presso.core.runtime import OnnxModel
    from tests.fakes import write_artifact

    d = write_artifact(tmp_path, "ref-ner", "ner")
    manifest = json.loads((d / "manifest.json").read_text())
    encoder = TextEncoder(d / "tokenizer.json", manifest["max_seq_len"])
    reference = reference_outputs(encoder, OnnxModel(d / "model.onnx").run, ["john smith lives in paris"], "test")

    def install(ref: dict) -> None:
        (d / "reference.json").write_text(json.dumps(ref))
        manifest["reference"] = {"file": "reference.json", "tolerance": ref["tolerance"],
                                 "sha256": hashlib.sha256((d / "reference.json").read_bytes()).hexdigest()}
        (d / "manifest.json").write_text(json.dumps(manifest))

    install(reference)
    LoadedModel(d, ["CPUExecutionProvider"], 1)  # matches: loads
    reference["logits"][0][1][0] += 0.5
    install(reference)
    with pytest.raises(ArtifactError, match=r"model ref-ner: on this machine its reference outputs differ .* by 0.5"):
        LoadedModel(d, ["CPUExecutionProvider"], 1)
    (d / "reference.json").write_text("{}")  # no longer its recorded checksum
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        LoadedModel(d, ["CPUExecutionProvider"], 1)


def test_an_unknown_manifest_version_is_refused_clearly(fake_models_dir, tmp_path):
    shutil.copytree(fake_models_dir / "fake-ner", tmp_path / "fake-ner")
    path = tmp_path / "fake-ner" / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "manifest_version": 1}))
    read_manifest(tmp_path / "fake-ner")
    path.write_text(json.dumps({**manifest, "manifest_version": 3}))
    with pytest.raises(ArtifactError, match=r"manifest_version 3 is not supported by this Presso \(it reads \[1, 2\]\)"):
        read_manifest(tmp_path / "fake-ner")


def test_the_manifest_contract_refuses_what_would_serve_wrong_answers(fake_models_dir, tmp_path):
    """A version-2 manifest without checksums, NER labels that are not IOB2 tags and an unknown
    decoding are refused at load, naming the field (they used to load and answer quietly)."""
    shutil.copytree(fake_models_dir / "fake-ner", tmp_path / "fake-ner")
    path = tmp_path / "fake-ner" / "manifest.json"
    good = json.loads(path.read_text())
    assert good["manifest_version"] == 2 and "tokenizer.json" in good["files"]
    for change, message in (({"files": None}, "files: version 2 manifests list the sha256"),
                            ({"labels": ["a", "b", "c"]}, "labels: token classification labels are IOB2"),
                            ({"decoding": "beam"}, "decoding")):
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(ArtifactError, match=message):
            read_manifest(tmp_path / "fake-ner")
    path.write_text(json.dumps(good))
    (tmp_path / "fake-ner" / "tokenizer.json").write_text((tmp_path / "fake-ner" / "tokenizer.json").read_text() + " ")
    with pytest.raises(ArtifactError, match="sha256 of tokenizer.json does not match"):
        read_manifest(tmp_path / "fake-ner")

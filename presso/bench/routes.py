"""``presso bench routes``: a confidence cascade (small -> large) against each model alone, over HTTP.

Small is the shipped pruned model, large the unpruned fine-tuned one (``presso build --no-prune``).
The cascade's thresholds come from ``presso calibrate`` on the validation split (target agreement
with the large model); a sweep of fixed thresholds gives the metric-vs-throughput curve. Every
configuration sends the whole test split through one Presso server (``batch`` texts per request,
``concurrency`` requests in flight), and the large model runs first and last so drift shows.

Writes ``reports/routes.json`` (``summary``: ``cascade_metric_gap_points`` = large minus calibrated
cascade, test split, points; ``cascade_speedup_vs_large`` = throughput ratio at the same
concurrency, one run) and ``reports/routes.png``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from presso.bench.net import free_port
from presso.bench.provenance import model_versions
from presso.bench.serve import cpu_name, start_server, stop_server
from presso.http_eval import post_all, score, test_split

SWEEP = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def routes_document(task: str, small: str, large: str, thresholds: dict[str, float]) -> dict:
    """A routes file with one cascade ``small -> large`` per named threshold."""
    return {"routes": {name: {"kind": "cascade", "task": task, "steps": [
        {"model": small, "threshold": t}, {"model": large}]} for name, t in thresholds.items()}}


def serve_with_routes(models_dir: Path, routes_file: Path, log_path: Path):
    """``presso serve`` of ``models_dir`` with ``routes_file`` on a free port, ready: ``(process, url)``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"PRESSO_MODELS_DIR": str(models_dir), "PRESSO_PORT": str(port), "PRESSO_LOG_LEVEL": "WARNING",
           "PRESSO_ROUTES_FILE": str(routes_file)}
    with open(log_path, "wb") as log:
        return start_server([sys.executable, "-m", "presso.cli", "serve"], env, url, log), url


def measure(url: str, endpoint: str, texts: list[str], test: list, task: str, batch: int, concurrency: int,
            model: str | None = None, route: str | None = None) -> dict:
    """One pass over ``texts``: throughput, the test metric, and which model answered how many."""
    started = time.perf_counter()
    results = asyncio.run(post_all(url, endpoint, model, texts, batch, concurrency, route=route))
    elapsed = time.perf_counter() - started
    metrics = score(task, test, results)
    metric = "f1" if task == "ner" else "accuracy"
    answered: dict[str, int] = {}
    for r in results:
        answered[r.get("model", model)] = answered.get(r.get("model", model), 0) + 1
    return {"texts_per_s": round(len(texts) / elapsed, 1), "elapsed_s": round(elapsed, 2), metric: float(metrics[metric]),
            "metrics": metrics, "answered_by": answered}


def run(models_dir: Path, small: str, large: str, dataset: str, out_dir: Path, batch: int = 8,
        concurrency: int = 16, target: float = 0.995, sweep: tuple[float, ...] = SWEEP,
        limit: int | None = None, calibration_limit: int | None = None, report_name: str = "routes") -> dict:
    """Calibrate, serve, measure every configuration; write ``<report_name>.json`` and ``.png``."""
    from presso.calibrate import builtin_validation_texts, calibrate

    splits, test, texts, endpoint = test_split(dataset, limit)
    task = splits.task
    work = Path(tempfile.mkdtemp(prefix="presso-bench-routes-"))
    routes_file = work / "routes.json"
    routes_file.write_text(json.dumps(routes_document(task, small, large, {"calibrated": 0.5})))
    validation = builtin_validation_texts(dataset)[:calibration_limit]
    started = time.perf_counter()
    calibration = calibrate("calibrated", routes_file, models_dir, validation, target,
                            f"{dataset} validation split", write=True)
    calibration_s = time.perf_counter() - started
    thresholds = {"calibrated": calibration.thresholds[0], **{f"t{t:g}": t for t in sweep}}
    routes_file.write_text(json.dumps(routes_document(task, small, large, thresholds)))
    proc, url = serve_with_routes(models_dir, routes_file, work / "server.log")
    try:
        measure(url, endpoint, texts[:256], test[:256], task, batch, concurrency, model=small)  # warm-up
        measure(url, endpoint, texts[:256], test[:256], task, batch, concurrency, model=large)
        configs: dict[str, dict] = {"large": measure(url, endpoint, texts, test, task, batch, concurrency,
                                                     model=large)}
        configs["small"] = measure(url, endpoint, texts, test, task, batch, concurrency, model=small)
        for name, t in thresholds.items():
            configs[f"cascade_{name}"] = {"threshold": t, **measure(url, endpoint, texts, test, task, batch,
                                                                   concurrency, route=name)}
        configs["large_again"] = measure(url, endpoint, texts, test, task, batch, concurrency, model=large)
    finally:
        stop_server(proc)
    report = {"dataset": splits.dataset, "task": task, "split": "test", "examples": len(texts),
              "cpu": cpu_name(), "batch_texts_per_request": batch, "concurrency": concurrency,
              "models": {k: v for k, v in model_versions(models_dir).items() if k in (small, large)},
              "small": small, "large": large,
              "calibration": {"target_agreement": target, "threshold": calibration.thresholds[0],
                              "validation_agreement": calibration.agreement, "validation_share_small":
                              calibration.shares[0], "examples": calibration.examples,
                              "seconds": round(calibration_s, 1)},
              "configs": configs, "summary": summarize(configs, "f1" if task == "ner" else "accuracy")}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{report_name}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out_dir / f"{report_name}.png")
    return report


def summarize(configs: dict[str, dict], metric: str) -> dict:
    """The issue's two figures for the calibrated cascade, against the mean of the two large passes."""
    large_tps = (configs["large"]["texts_per_s"] + configs["large_again"]["texts_per_s"]) / 2
    cascade = configs["cascade_calibrated"]
    gap = round(100 * (configs["large"][metric] - cascade[metric]), 2)
    speedup = round(cascade["texts_per_s"] / large_tps, 3)
    return {"metric": metric, "large": configs["large"][metric], "small": configs["small"][metric],
            "cascade": cascade[metric], "cascade_metric_gap_points": gap, "cascade_speedup_vs_large": speedup,
            "small_speedup_vs_large": round(configs["small"]["texts_per_s"] / large_tps, 3),
            "large_drift": round(configs["large_again"]["texts_per_s"] / configs["large"]["texts_per_s"], 3),
            "targets": {"gap_at_most_0.2_points": gap <= 0.2, "speedup_at_least_1.5": speedup >= 1.5}}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = report["summary"]["metric"]
    configs = report["configs"]
    sweep = sorted((c for k, c in configs.items() if k.startswith("cascade_t")), key=lambda c: c["threshold"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([c["texts_per_s"] for c in sweep], [c[metric] for c in sweep], "o-", label="cascade, threshold sweep")
    for c in sweep:
        ax.annotate(f"{c['threshold']:g}", (c["texts_per_s"], c[metric]), textcoords="offset points", xytext=(4, 4))
    for key, marker in (("small", "s"), ("large", "D"), ("cascade_calibrated", "*")):
        ax.plot(configs[key]["texts_per_s"], configs[key][metric], marker, markersize=12 if marker == "*" else 8,
                label=key.replace("_", " "))
    ax.set_xlabel(f"texts/s over HTTP ({report['concurrency']} requests of {report['batch_texts_per_request']} "
                  f"texts in flight)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"Confidence cascade on {report['dataset']}: {report['small']} -> {report['large']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

"""``presso bench routes``: a confidence cascade (small -> large) against each model alone, over HTTP.

Small is the shipped pruned model, large the unpruned fine-tuned one (``presso build --no-prune``).
The cascade's thresholds come from ``presso calibrate`` on the validation split (target agreement
with the large model); a sweep of fixed thresholds gives the metric-vs-throughput curve. Every
configuration sends the whole test split through one Presso server (``batch`` texts per request,
``concurrency`` requests in flight): a Python client scores each configuration, wrk (C) measures its
throughput; the large model runs first and last so drift shows, and the headline speedup is the
median of paired rounds (large, then the calibrated cascade, back to back).

Writes ``reports/routes.json`` (``summary``: ``cascade_metric_gap_points`` = large minus calibrated
cascade, test split, points; ``cascade_speedup_vs_large`` = throughput ratio at the same
concurrency, median of the paired rounds of one run; ``ideal_speedup_vs_large`` = what the
escalated share and the two models' speeds allow) and ``reports/routes.png``.
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
from presso.bench.serve import cpu_name, find_artifact, start_server, stop_server
from presso.http_eval import post_all, score, test_split

SWEEP = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
WRK_SECONDS = 8.0


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
            requests_file: Path, tokens: list[int], model: str | None = None, route: str | None = None,
            wrk_seconds: float = WRK_SECONDS) -> dict:
    """The test metric and which model answered how many texts and tokens (``tokens``: each text's,
    special tokens included) in one pass from a Python client, and the throughput (:func:`wrk_pass`)."""
    started = time.perf_counter()
    results = asyncio.run(post_all(url, endpoint, model, texts, batch, concurrency, route=route))
    elapsed = time.perf_counter() - started
    metrics = score(task, test, results)
    metric = "f1" if task == "ner" else "accuracy"
    answered: dict[str, int] = {}
    answered_tokens: dict[str, int] = {}
    for r, n in zip(results, tokens):
        by = r.get("model", model)
        answered[by] = answered.get(by, 0) + 1
        answered_tokens[by] = answered_tokens.get(by, 0) + n
    return {**wrk_pass(url, endpoint, requests_file, len(texts), concurrency, model, route, wrk_seconds),
            "python_client_texts_per_s": round(len(texts) / elapsed, 1), metric: float(metrics[metric]),
            "metrics": metrics, "answered_by": answered, "answered_tokens_by": answered_tokens}


def token_counts(models_dir: Path, name: str, texts: list[str]) -> list[int]:
    """Each text's tokens as model ``name`` encodes it (every window's, special tokens included)."""
    from presso.core.runtime import onnxruntime_distribution, select_providers
    from presso.service.registry import LoadedModel

    model = LoadedModel(find_artifact(models_dir, name), select_providers(onnxruntime_distribution()), 1)
    return [sum(w.tokens for w in windows) for windows in model.tokenize(texts)]


def write_requests(texts: list[str], batch: int, path: Path) -> Path:
    """The test split as request bodies' ``texts`` arrays (``batch`` texts each, in order), one JSON
    array per line: what :func:`wrk_pass` replays."""
    path.write_text("".join(json.dumps(texts[i: i + batch]) + "\n" for i in range(0, len(texts), batch)))
    return path


def wrk_pass(url: str, endpoint: str, requests_file: Path, texts: int, concurrency: int,
             model: str | None = None, route: str | None = None, duration_s: float = WRK_SECONDS) -> dict:
    """Throughput with wrk at ``concurrency`` connections for ``duration_s``, cycling through
    ``requests_file`` (``texts`` texts in all): a load generator in C, so the client does not take
    the 2 cores' time that a Python client takes (``python_client_texts_per_s`` keeps that figure).

    Raises:
        RuntimeError: a request was not answered 200 (the count by status class is in the message).
    """
    from presso.bench import wrk

    lines = len(requests_file.read_text().splitlines())
    selector = json.dumps({**({"model": model} if model else {}), **({"route": route} if route else {})})
    suffix = (", " + selector[1:]) if selector != "{}" else "}"
    out = wrk.run(url, requests_file, concurrency, duration_s, paths=endpoint, body=('{"texts": ', suffix))
    if out["ok"] != out["requests"] or not out["ok"]:
        raise RuntimeError(f"wrk through {model or route}: not every request answered 200: {out}")
    return {"texts_per_s": round(out["ok"] * texts / lines / out["duration_s"], 1), "requests": out["ok"],
            "elapsed_s": round(out["duration_s"], 2),
            "p50_ms": out["p50_ms"], "p99_ms": out["p99_ms"], "load_generator": "wrk",
            "loadgen_cpu_s": out["loadgen_cpu_s"]}


def run(models_dir: Path, small: str, large: str, dataset: str, out_dir: Path, batch: int = 8,
        concurrency: int = 16, target: float = 0.995, sweep: tuple[float, ...] = SWEEP,
        limit: int | None = None, calibration_limit: int | None = None, report_name: str = "routes",
        rounds: int = 3, wrk_seconds: float = WRK_SECONDS) -> dict:
    """Calibrate, serve, measure every configuration, then ``rounds`` paired rounds of large and the
    calibrated cascade; write ``<report_name>.json`` and ``.png``."""
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
    requests_file = write_requests(texts, batch, work / "requests.txt")
    tokens = token_counts(models_dir, small, texts)
    warm_file = write_requests(texts[:256], batch, work / "warm-up.txt")
    try:
        for model in (small, large):
            wrk_pass(url, endpoint, warm_file, 256, concurrency, model=model, duration_s=2)

        def one(**selector) -> dict:
            return measure(url, endpoint, texts, test, task, batch, concurrency, requests_file, tokens, **selector,
                           wrk_seconds=wrk_seconds)

        configs: dict[str, dict] = {"large": one(model=large), "small": one(model=small)}
        for name, t in thresholds.items():
            configs[f"cascade_{name}"] = {"threshold": t, **one(route=name)}
        configs["large_again"] = one(model=large)
        paired = []
        for _ in range(rounds):  # the headline: large and the calibrated cascade back to back, per round
            base = wrk_pass(url, endpoint, requests_file, len(texts), concurrency, large, None, wrk_seconds)
            cand = wrk_pass(url, endpoint, requests_file, len(texts), concurrency, None, "calibrated", wrk_seconds)
            base, cand = base["texts_per_s"], cand["texts_per_s"]
            paired.append({"large_texts_per_s": base, "cascade_texts_per_s": cand, "ratio": round(cand / base, 3)})
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
              "configs": configs, "paired_rounds": paired,
              "summary": summarize(configs, "f1" if task == "ner" else "accuracy", small, paired)}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{report_name}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out_dir / f"{report_name}.png")
    return report


def summarize(configs: dict[str, dict], metric: str, small: str, paired: list[dict] | None = None) -> dict:
    """The issue's two figures for the calibrated cascade. ``cascade_speedup_vs_large``: the median
    of ``paired`` rounds' ratios (large and cascade measured back to back, so a slow spell of a
    shared machine hits both), else the single pass against the mean of the two large passes
    (``single_pass_speedup_vs_large``, always given)."""
    large_tps = (configs["large"]["texts_per_s"] + configs["large_again"]["texts_per_s"]) / 2
    cascade = configs["cascade_calibrated"]
    gap = round(100 * (configs["large"][metric] - cascade[metric]), 2)
    single_pass = round(cascade["texts_per_s"] / large_tps, 3)
    ratios = sorted(r["ratio"] for r in paired or [])
    speedup = ratios[len(ratios) // 2] if ratios else single_pass
    return {"metric": metric, "large": configs["large"][metric], "small": configs["small"][metric],
            "cascade": cascade[metric], "cascade_metric_gap_points": gap, "cascade_speedup_vs_large": speedup,
            "speedup_from": f"median of {len(ratios)} paired rounds" if ratios else "single pass",
            "single_pass_speedup_vs_large": single_pass,
            "ideal_speedup_vs_large": ideal_speedup(configs, small),
            "ideal_speedup_by_text_count": ideal_speedup(configs, small, by="texts"),
            "small_speedup_vs_large": round(configs["small"]["texts_per_s"] / large_tps, 3),
            "large_drift": round(configs["large_again"]["texts_per_s"] / configs["large"]["texts_per_s"], 3),
            "targets": {"gap_at_most_0.2_points": gap <= 0.2, "speedup_at_least_1.5": speedup >= 1.5}}


def ideal_speedup(configs: dict[str, dict], small: str, by: str = "tokens") -> float:
    """What the calibrated cascade would give over large with no scheduling loss, in units of
    large's time for the whole split: small runs every text (``large/small`` of that time) and large
    the escalated ones, ``1 / (large/small + escalated share)``. The share is of tokens (``by=
    "tokens"``: a padded encoder's cost grows with them, and doubtful sentences are the long ones)
    or of texts (``by="texts"``); throughputs from the single passes."""
    small_tps, large_tps = configs["small"]["texts_per_s"], configs["large"]["texts_per_s"]
    answered = configs["cascade_calibrated"]["answered_by" if by == "texts" else "answered_tokens_by"]
    escalated = 1 - answered.get(small, 0) / sum(answered.values())
    return round(1 / (large_tps / small_tps + escalated), 3)


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

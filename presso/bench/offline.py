"""Reference points of the serve benchmark measured without HTTP, on the same artifact:

- (D) offline ONNX Runtime throughput at each batch size, texts batched in file order (what a
  user scoring a dataset offline gets), on the service's session settings and worker threads,
  with length-sorted batches reported beside it;
- one text alone: tokenization + one ONNX Runtime call + span extraction, the floor for
  Presso's latency at concurrency 1;
- a cost model of one ONNX Runtime call, ``fixed_ms + per_token_ms x batch x seq_len`` (padded
  tokens), fitted by least squares on several shapes with the service's worker threads running
  side by side, and from it the most that dynamic batching can gain over one sequence per call
  (:func:`batching_bound`).
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from presso.core.encoding import pad_batch
from presso.service.registry import LoadedModel
from presso.core.runtime import onnxruntime_distribution, select_providers

BATCH_SIZES = (1, 4, 8, 16, 32, 64, 128)
COST_SHAPES = tuple((b, t) for b in (1, 2, 4, 8, 16, 32) for t in (8, 16, 32, 64))  # batch x tokens


def load(model_dir: Path, intra_op_threads: int = 0) -> LoadedModel:
    return LoadedModel(model_dir, select_providers(onnxruntime_distribution()), intra_op_threads)


def throughput(model: LoadedModel, texts: list[str], workers: int = 1, seconds_per_size: float = 3.0) -> dict:
    """Sequences per second of ``model.onnx.run`` on padded batches (tokenization excluded),
    with ``workers`` threads running batches side by side on the one session, as the service does.

    Returns:
        ``{"file_order": {batch_size: seq_per_s}, "length_sorted": {...}, "best": {...}}``; ``best``
        is the best batch size in file order.
    """
    sequences = [windows[0].encoded for windows in model.tokenize(texts)]
    orders = {"file_order": sequences, "length_sorted": sorted(sequences, key=lambda e: e.length)}
    out: dict = {name: {} for name in orders}
    for name, seqs in orders.items():
        for size in BATCH_SIZES:
            batches = [pad_batch(seqs[i:i + size], model.encoder.pad_id) for i in range(0, len(seqs), size)]
            if name == "length_sorted":  # a timed run may not finish a pass: not the shortest batches first
                random.Random(0).shuffle(batches)
            model.onnx.run(batches[0])  # warm up
            out[name][str(size)] = round(_run_for(model, batches, workers, seconds_per_size), 1)
    out["best"] = _best(out, workers)
    return out


def _best(out: dict, workers: int) -> dict:
    best_size = max(out["file_order"], key=out["file_order"].get)
    return {"order": "file_order", "batch_size": int(best_size), "seq_per_s": out["file_order"][best_size],
            "workers": workers}


def best_of(*runs: dict) -> dict:
    """Per order and batch size, the highest of several :func:`throughput` results (the machine is
    shared: the strongest baseline is the fair one)."""
    out = {order: {size: max(r[order][size] for r in runs) for size in runs[0][order]}
           for order in ("file_order", "length_sorted")}
    out["best"] = _best(out, runs[0]["best"]["workers"])
    return out


def _run_for(model: LoadedModel, batches: list[dict], workers: int, seconds: float) -> float:
    """Sequences per second over ``seconds`` with ``workers`` threads taking batches in turn."""
    lock = threading.Lock()
    position = itertools.count()
    done = [0] * workers
    stop_at = time.perf_counter() + seconds

    def work(slot: int) -> None:
        while time.perf_counter() < stop_at:
            with lock:
                batch = batches[next(position) % len(batches)]
            model.onnx.run(batch)
            done[slot] += batch["input_ids"].shape[0]

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def single_call_ms(model: LoadedModel, texts: list[str], n: int = 300) -> dict:
    """p50 of tokenize + one ONNX Runtime call + post-processing for one text, over ``n`` texts,
    and ``inference_mean_ms``: the mean of its ONNX Runtime call with decoding (``model.infer``)."""
    times, inference = [], []
    for text in texts[:n]:
        t0 = time.perf_counter()
        windows = model.tokenize([text])[0]
        t1 = time.perf_counter()
        partials = model.infer(windows)
        inference.append(time.perf_counter() - t1)
        model.assemble(text, partials)
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(statistics.median(times), 3), "texts": len(times),
            "inference_mean_ms": round(1000 * statistics.fmean(inference), 3)}


def best_single_call_ms(model_dir: Path, texts: list[str]) -> dict:
    """:func:`single_call_ms` over every text on a default session (every core) and on a
    single-threaded one; the faster is the reference (what calling ONNX Runtime directly gives)."""
    runs = {threads: single_call_ms(load(model_dir, threads), texts, n=len(texts)) for threads in (0, 1)}
    best = min(runs, key=lambda t: runs[t]["p50_ms"])
    return {**runs[best], "intra_op_threads": best, "p50_ms_by_intra_op_threads": {
        str(t): r["p50_ms"] for t, r in runs.items()},
        "what": "tokenize + one ONNX Runtime call + span extraction, one text, no HTTP"}


def cost_model(model: LoadedModel, texts: list[str], workers: int = 1, seconds_per_shape: float = 0.5,
               shapes: tuple[tuple[int, int], ...] = COST_SHAPES) -> dict:
    """Fit ``ms per call = fixed_ms + per_token_ms x batch x seq_len`` on ``shapes`` (batch x padded
    tokens), each measured for ``seconds_per_shape`` with ``workers`` threads calling the session
    side by side (what each of the service's workers sees). Inputs are real token ids: the test
    texts' tokens, repeated to the length.

    Returns:
        ``fixed_ms``, ``per_token_ms``, the fit's ``median_relative_error``, ``mean_tokens`` of ``texts`` (special
        tokens included), ``workers`` and every measured ``points`` (``batch``, ``tokens``, ``ms``).
    """
    sequences = [windows[0].encoded for windows in model.tokenize(texts)]
    ids = [i for e in sequences for i in e.ids]
    points = []
    for batch, tokens in shapes:
        row = np.resize(np.array(ids, dtype=np.int64), tokens)
        inputs = {"input_ids": np.tile(row, (batch, 1)), "attention_mask": np.ones((batch, tokens), dtype=np.int64),
                  "token_type_ids": np.zeros((batch, tokens), dtype=np.int64)}
        model.onnx.run(inputs)  # warm up
        per_s = _run_for(model, [inputs], workers, seconds_per_shape) / batch  # calls per second, all workers
        points.append({"batch": batch, "tokens": tokens, "ms": round(1000.0 * workers / per_s, 4)})
    fixed, per_token, error = fit_cost(points)
    return {"fixed_ms": round(fixed, 4), "per_token_ms": round(per_token, 5), "median_relative_error": round(error, 4),
            "fit": "least squares on relative error (each point weighted by 1 / its time)",
            "mean_tokens": round(statistics.fmean(e.length for e in sequences), 2), "workers": workers,
            "points": points}


def fit_cost(points: list[dict]) -> tuple[float, float, float]:
    """``(fixed_ms, per_token_ms, median_relative_error)`` of ``ms = fixed + per_token x batch x
    tokens`` over ``points``.

    Least squares on relative error: the shapes span 100x in time, and a plain fit is decided by
    the largest ones (measured: it put the fixed cost at -1.9 ms), while the bound needs the small
    ones right.
    """
    x = np.array([[1.0, p["batch"] * p["tokens"]] for p in points])
    y = np.array([p["ms"] for p in points])
    w = 1.0 / y
    (fixed, per_token), *_ = np.linalg.lstsq(x * w[:, None], y * w, rcond=None)
    relative = np.abs(x @ np.array([fixed, per_token]) - y) * w
    return float(fixed), float(per_token), float(np.median(relative))


def batching_bound(cost: dict, clients: int, max_batch_size: int) -> dict:
    """The most dynamic batching can gain in throughput over one sequence per call (A/B) with
    ``clients`` requests in flight, from :func:`cost_model`: alone a sequence costs
    ``fixed + per_token x L``; batched, at most ``b = min(max_batch_size, ceil(clients / workers))``
    sequences share a call (each worker can only batch what is in flight), with no padding (an
    upper bound), so ``fixed / b + per_token x L``. HTTP and tokenization are left out: they cost
    the same per request in both, so the real ratio stays below this bound.

    Returns:
        ``bound`` (the ratio), the ``batch`` assumed and the two per-sequence costs in ms.
    """
    b = max(1, min(max_batch_size, math.ceil(clients / cost["workers"])))
    tokens = cost["mean_tokens"]
    alone = cost["fixed_ms"] + cost["per_token_ms"] * tokens
    batched = cost["fixed_ms"] / b + cost["per_token_ms"] * tokens
    return {"bound": round(alone / batched, 3), "batch": b, "ms_per_sequence_alone": round(alone, 4),
            "ms_per_sequence_batched": round(batched, 4), "clients": clients}

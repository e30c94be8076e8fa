"""Reference points of the serve benchmark measured without HTTP, on the same artifact:

- (D) offline ONNX Runtime throughput at each batch size, texts batched in file order (what a
  user scoring a dataset offline gets), on the service's session settings and worker threads,
  with length-sorted batches reported beside it;
- one text alone: tokenization + one ONNX Runtime call + span extraction, the floor for
  Presso's latency at concurrency 1.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from pathlib import Path

from presso.core.encoding import pad_batch
from presso.service.registry import LoadedModel
from presso.core.runtime import onnxruntime_distribution, select_providers

BATCH_SIZES = (1, 4, 8, 16, 32, 64, 128)


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
    """p50 of tokenize + one ONNX Runtime call + post-processing for one text, over ``n`` texts."""
    times = []
    for text in texts[:n]:
        t0 = time.perf_counter()
        windows = model.tokenize([text])[0]
        model.assemble(text, model.infer(windows))
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(statistics.median(times), 3), "texts": len(times)}


def best_single_call_ms(model_dir: Path, texts: list[str]) -> dict:
    """:func:`single_call_ms` over every text on a default session (every core) and on a
    single-threaded one; the faster is the reference (what calling ONNX Runtime directly gives)."""
    runs = {threads: single_call_ms(load(model_dir, threads), texts, n=len(texts)) for threads in (0, 1)}
    best = min(runs, key=lambda t: runs[t]["p50_ms"])
    return {**runs[best], "intra_op_threads": best, "p50_ms_by_intra_op_threads": {
        str(t): r["p50_ms"] for t, r in runs.items()},
        "what": "tokenize + one ONNX Runtime call + span extraction, one text, no HTTP"}

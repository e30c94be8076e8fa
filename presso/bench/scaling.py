"""``presso bench scaling``: how serving cost grows with text length and cores, and how close the
shipped model runs to this CPU's peak.

* Over HTTP (wrk, closed loop, 32 clients) on texts of about 16, 64, 256 and 1,024 tokens (CoNLL-2003
  test sentences joined; NER texts longer than ``max_seq_len`` run as windows), with the server
  pinned to 1 core and to 2 cores (``taskset``; the service sizes its workers from its CPU affinity):
  requests/s, tokens/s, server CPU per request and per token, latency.
* Roofline point at 8 x 128: multiply-accumulates of one call (from the ONNX graph: every MatMul
  with a constant weight, INT8 or fp32 as the graph runs it, plus the two attention products)
  divided by its measured time, against this CPU's peak (cores x clock x MACs per cycle for its
  widest integer and float instructions), and ONNX Runtime's profiler splitting the call's time
  into MatMul kernels and everything else.

Writes ``serve-scaling.json`` and ``serve-scaling.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from presso.bench import wrk
from presso.bench.net import free_port
from presso.bench.provenance import model_versions
from presso.bench.serve import find_artifact, start_server, stop_server
from presso.bench.texts import test_sentences

LENGTHS = (16, 64, 256, 1024)  # target tokens per text (without special tokens)
CORE_SETS = ("0", "0,1")
CLIENTS = 32
TEXTS_PER_LENGTH = 200

# Multiply-accumulates per cycle per core of the widest instructions, approximate (Intel 64 and
# IA-32 Architectures Optimization Reference Manual; two vector multiply ports): 8-bit dot products
# without VNNI need vpmaddubsw + vpmaddwd per 32 (256-bit) or 64 (512-bit) products, one pair per
# cycle; VNNI's vpdpbusd does them in one instruction, two per cycle; fp32 FMA: 8 / 16 lanes x 2.
PEAK_MACS_PER_CYCLE = {
    "avx512_vnni": {"int8": 128, "fp32": 32},
    "avx_vnni": {"int8": 64, "fp32": 16},
    "avx512f": {"int8": 64, "fp32": 32},
    "avx2": {"int8": 32, "fp32": 16},
}
# AMX (Sapphire Rapids and later): one TDPBUSD tile multiply does 16 x 16 x 64 int8 MACs in 16
# cycles, 1,024 per cycle per core (Intel AMX instruction reference, "TDPBUSD" latency/throughput);
# ONNX Runtime's MLAS uses it for u8s8 integer GEMMs where the CPU and kernel allow.
AMX_INT8_MACS_PER_CYCLE = 1024


def length_texts(encoder, sentences: list[str], target: int, n: int) -> tuple[list[str], float]:
    """``n`` texts of about ``target`` tokens each: consecutive test sentences joined with spaces,
    starting at different sentences (cycling through the test split); and their mean token count
    (the sentences' tokens, special tokens excluded; a sentence is shorter than a window)."""
    lengths = [len(e.ids) for e in encoder.tokenizer.encode_batch(sentences, add_special_tokens=False)]
    texts, counts, start = [], [], 0
    for _ in range(n):
        parts, tokens, i = [], 0, start
        while tokens < target:
            parts.append(sentences[i % len(sentences)])
            tokens += lengths[i % len(sentences)]
            i += 1
        texts.append(" ".join(parts))
        counts.append(tokens)
        start = (start + 7) % len(sentences)
    return texts, statistics.fmean(counts)


def http_level(models_dir: Path, texts: list[str], cpus: str, duration_s: float, warmup_s: float,
               work: Path, tokens_per_text: float) -> dict:
    """One server pinned to ``cpus``, 32 closed-loop clients sending ``texts`` to ``/ner``."""
    import psutil

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    texts_file = wrk.write_texts(texts, work / f"texts-{len(texts)}-{int(tokens_per_text)}.jsonl")
    env = {"PRESSO_MODELS_DIR": str(models_dir), "PRESSO_PORT": str(port), "PRESSO_LOG_LEVEL": "WARNING"}
    cmd = ["taskset", "-c", cpus, sys.executable, "-m", "presso.cli", "serve"]
    proc = start_server(cmd, env, url)
    try:
        server = psutil.Process(proc.pid)
        wrk.run(url, texts_file, CLIENTS, warmup_s)
        cpu0 = sum(server.cpu_times()[:2])
        r = wrk.run(url, texts_file, CLIENTS, duration_s)
        cpu_s = sum(server.cpu_times()[:2]) - cpu0
    finally:
        stop_server(proc)
    rps = r["ok"] / r["duration_s"]
    return {"cores": len(cpus.split(",")), "cpus": cpus, "throughput_rps": round(rps, 1),
            "tokens_per_s": round(rps * tokens_per_text, 0), "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "ok": r["ok"], "errors": r["5xx"] + r["socket_errors"] + r["timeouts"] + r["429"],
            "server_cpu_ms_per_request": round(1000 * cpu_s / max(1, r["ok"]), 3),
            "server_cpu_us_per_token": round(1e6 * cpu_s / max(1, r["ok"] * tokens_per_text), 2)}


def graph_macs(model_path: Path, seq_len: int) -> dict:
    """Multiply-accumulates per sequence of ``seq_len`` tokens: ``int8`` (MatMuls whose weight
    comes through a ``DequantizeLinear``, which ONNX Runtime runs as integer kernels), ``fp32``
    (MatMul / Gemm with a plain constant weight) and ``attention`` (``Q K^T`` and ``P V``: 2 x
    seq_len^2 x the query projection's width, per layer)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    shapes = {i.name: list(i.dims) for i in graph.initializer}
    dequantized = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    macs = {"int8": 0, "fp32": 0, "attention": 0}
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        weight = node.input[1]
        kind = "int8" if weight in dequantized else "fp32"
        shape = shapes.get(dequantized.get(weight, weight))
        if not shape or len(shape) != 2:
            continue
        macs[kind] += seq_len * shape[0] * shape[1]
        if "query" in node.name:
            macs["attention"] += 2 * seq_len * seq_len * shape[1]
    return macs


def cpu_peak() -> dict:
    """Peak MACs per second of this machine from its flags, core count and clock (``cpu MHz``)."""
    from presso.compress.quantize import cpu_flags

    flags = cpu_flags()
    isa = next((k for k in PEAK_MACS_PER_CYCLE if k in flags), "avx2")
    mhz = []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz.append(float(line.split(":", 1)[1]))
    except OSError:
        pass
    ghz = (max(mhz) / 1000.0) if mhz else None
    cores = os.cpu_count() or 1
    per_cycle = PEAK_MACS_PER_CYCLE[isa]
    return {"isa": isa, "cores": cores, "ghz": ghz, "macs_per_cycle_per_core": per_cycle,
            "peak_int8_macs_per_s": None if ghz is None else cores * ghz * 1e9 * per_cycle["int8"],
            "peak_fp32_macs_per_s": None if ghz is None else cores * ghz * 1e9 * per_cycle["fp32"],
            "amx": "amx_int8" in flags,
            "peak_int8_amx_macs_per_s": (cores * ghz * 1e9 * AMX_INT8_MACS_PER_CYCLE
                                         if ghz is not None and "amx_int8" in flags else None)}


def roofline(artifact: Path, batch: int = 8, seq_len: int = 128, runs: int = 20) -> dict:
    """The shipped model at ``batch`` x ``seq_len``: achieved MACs/s against :func:`cpu_peak` and the
    MatMul share of ONNX Runtime's profiled node time."""
    import numpy as np

    from presso.compress.evaluate import fixed_shape_latency_ms
    from presso.core.manifest import parse_manifest
    from presso.core.runtime import OnnxModel

    manifest = parse_manifest(artifact)
    model_path = artifact / manifest.model_file
    model = OnnxModel(model_path)
    p50_s = fixed_shape_latency_ms(model.run, batch, seq_len, runs)["p50_ms"] / 1000.0
    ids = np.ones((batch, seq_len), dtype=np.int64)  # the inputs fixed_shape_latency_ms times
    feeds = {k: v for k, v in {"input_ids": ids, "attention_mask": np.ones_like(ids),
                               "token_type_ids": np.zeros_like(ids)}.items() if k in model.input_names}
    per_seq = graph_macs(model_path, seq_len)
    total = {k: v * batch for k, v in per_seq.items()}
    peak = cpu_peak()
    achieved = sum(total.values()) / p50_s
    def ideal(int8_peak: float | None) -> float | None:
        """The roofline's ceiling for this mix: each class of work at its own peak (seconds)."""
        if not int8_peak:
            return None
        return total["int8"] / int8_peak + (total["fp32"] + total["attention"]) / peak["peak_fp32_macs_per_s"]

    ideal_s = ideal(peak["peak_int8_macs_per_s"])
    ideal_amx_s = ideal(peak["peak_int8_amx_macs_per_s"])  # the integer GEMMs on AMX tiles
    profile = profiled_ops(model_path, feeds, runs=10)
    return {"shape": f"{batch}x{seq_len}", "p50_ms": round(1000 * p50_s, 3), "macs": total,
            "achieved_macs_per_s": round(achieved, 0), "cpu": peak,
            "ideal_ms_at_peak": None if ideal_s is None else round(1000 * ideal_s, 3),
            "fraction_of_peak": None if ideal_s is None else round(ideal_s / p50_s, 4),
            "ideal_ms_at_amx_peak": None if ideal_amx_s is None else round(1000 * ideal_amx_s, 3),
            "fraction_of_amx_peak": None if ideal_amx_s is None else round(ideal_amx_s / p50_s, 4),
            "profile": profile}


def profiled_ops(model_path: Path, feeds: dict, runs: int = 10) -> dict:
    """ONNX Runtime's profiler over ``runs`` calls: node time by operator type, and the share of
    MatMul-like kernels (MatMul, Gemm and their quantized / fused forms)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, feeds)
        trace = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + event["dur"] / 1000.0
    total = sum(by_op.values()) or 1.0
    matmul = sum(v for k, v in by_op.items() if "MatMul" in k or "Gemm" in k)
    return {"runs": runs, "node_ms_by_op": {k: round(v / runs, 3) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
            "matmul_share": round(matmul / total, 4)}


def run(models_dir: Path, name: str, out_dir: Path, duration_s: float = 10, warmup_s: float = 2) -> dict:
    """Measure every length x core set over HTTP and the roofline point; write the report."""
    from presso.core.manifest import parse_manifest
    from presso.core.encoding import artifact_encoder

    artifact = find_artifact(models_dir, name)
    manifest = parse_manifest(artifact)
    encoder = artifact_encoder(artifact, manifest)
    sentences = test_sentences()
    work = Path(tempfile.mkdtemp(prefix="presso-scaling-"))
    try:
        only = work / "models"
        only.mkdir()
        (only / artifact.name).symlink_to(artifact.resolve())
        levels = []
        for target in LENGTHS:
            texts, tokens = length_texts(encoder, sentences, target, TEXTS_PER_LENGTH)
            windows = statistics.fmean(len(w) for w in encoder.encode_windows(texts))
            for cpus in CORE_SETS:
                level = {"target_tokens": target, "mean_tokens": round(tokens, 1), "mean_windows": round(windows, 2),
                         **http_level(only, texts, cpus, duration_s, warmup_s, work, tokens)}
                levels.append(level)
                print(f"  {target} tokens, cores {cpus}: {level['throughput_rps']} req/s, "
                      f"{level['server_cpu_us_per_token']} us CPU per token", file=sys.stderr, flush=True)
        point = roofline(artifact)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"http": levels, "two_vs_one_core": two_vs_one(levels), "roofline": point,
              "setup": {"model": manifest.name, "clients": CLIENTS, "duration_s": duration_s, "warmup_s": warmup_s,
                        "texts_per_length": TEXTS_PER_LENGTH, "route": "/ner"},
              "models": model_versions(models_dir), "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "serve-scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out_dir / "serve-scaling.png")
    return report


def two_vs_one(levels: list[dict]) -> dict:
    """Throughput with 2 cores over 1 core, per target length."""
    out = {}
    for target in sorted({lv["target_tokens"] for lv in levels}):
        by = {lv["cores"]: lv["throughput_rps"] for lv in levels if lv["target_tokens"] == target}
        if by.get(1) and by.get(2):
            out[str(target)] = round(by[2] / by[1], 2)
    return out


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for cores in (1, 2):
        rows = [lv for lv in report["http"] if lv["cores"] == cores]
        x = [lv["mean_tokens"] for lv in rows]
        left.plot(x, [lv["tokens_per_s"] for lv in rows], marker="o", label=f"{cores} core(s)")
        right.plot(x, [lv["server_cpu_us_per_token"] for lv in rows], marker="o", label=f"{cores} core(s)")
    for ax, label in ((left, "tokens/s over HTTP"), (right, "server CPU us per token")):
        ax.set_xscale("log")
        ax.set_xlabel("tokens per text")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
    point = report["roofline"]
    fig.suptitle(f"/ner, {CLIENTS} clients; 8x128 roofline: {point['fraction_of_peak']:.1%} of peak, "
                 f"MatMul {point['profile']['matmul_share']:.0%} of node time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

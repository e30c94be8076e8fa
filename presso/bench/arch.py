"""The architecture support matrix: every adapter family (:mod:`presso.compress.arch`) through the
compression stages on a tiny random model built from its transformers config (no downloads).

Each stage's cell is ``"ok"``, ``"skipped: <why>"`` (the adapter says the stage does not apply)
or ``"failed: <error>"``. ``presso bench arch`` writes ``reports/arch-support.json`` and a
markdown table; ``tests/test_arch.py`` asserts the same cells.
"""

from __future__ import annotations

import json
import re
import tempfile
import traceback
from pathlib import Path

import numpy as np

STAGES = ("fine_tune", "head_prune", "ffn_prune", "layer_drop", "reload", "export", "fusion", "static_int8", "dynamic_int8",
          "serve")
SERVE_TEXTS = ["w5 w6 w7", "w8, w9 (w10) 🙂 w11", ""]
TASKS = ("ner", "classify")
_SHAPE = dict(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
              max_position_embeddings=160)


def tiny_config(family: str):
    """A 3-layer, 4-head, hidden-32 config of ``family`` (a :data:`presso.compress.arch.ADAPTERS` family)."""
    import transformers as t

    return {
        "bert": lambda: t.BertConfig(**_SHAPE),
        "roberta": lambda: t.RobertaConfig(**_SHAPE, pad_token_id=1),
        "xlm-roberta": lambda: t.XLMRobertaConfig(**_SHAPE, pad_token_id=1),
        "electra": lambda: t.ElectraConfig(**_SHAPE, embedding_size=16),
        "distilbert": lambda: t.DistilBertConfig(vocab_size=120, dim=32, n_layers=3, n_heads=4, hidden_dim=64,
                                                 max_position_embeddings=160),
        "albert": lambda: t.AlbertConfig(**_SHAPE, embedding_size=16),
        "deberta-v2": lambda: t.DebertaV2Config(**_SHAPE, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                                position_buckets=16, max_relative_positions=32, type_vocab_size=0),
        "mpnet": lambda: t.MPNetConfig(**_SHAPE),
    }[family]()


FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert", "albert", "deberta-v2", "mpnet")


def _fail(exc: BaseException) -> str:
    return f"failed: {type(exc).__name__}: {exc}"[:300]


def probe(family: str, task: str, work: Path, seed: int = 0, artifact_out: Path | None = None) -> dict:
    """Run one family's tiny random model through pruning, reload, export, fusion and INT8.
    ``artifact_out``: also keep the served artifact there (the test serves it over HTTP).

    Returns:
        ``{"family", "model_type", "task", "inputs", "stages": {stage: cell}, "details"}``.
    """
    import torch
    import transformers

    from presso.compress.arch import adapter_for
    from presso.compress.export import check_parity, export_onnx
    from presso.compress.prune import prune_model
    from presso.compress.quantize import HEAD_NODES, optimize_graph, quantize_dynamic, quantize_static
    from presso.compress.train import as_numpy_logits
    from presso.core.runtime import OnnxModel

    torch.manual_seed(seed)
    config = tiny_config(family)
    config.num_labels = 5
    auto = transformers.AutoModelForTokenClassification if task == "ner" else \
        transformers.AutoModelForSequenceClassification
    model = auto.from_config(config)
    adapter = adapter_for(model)
    ids = torch.randint(5, 120, (4, 12), generator=torch.Generator().manual_seed(seed))
    labels = torch.randint(0, 5, (4, 12) if task == "ner" else (4,), generator=torch.Generator().manual_seed(seed))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    numpy_batch = {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy()),
                   "token_type_ids": np.zeros_like(ids.numpy())}
    stages: dict[str, str] = {}
    details: dict = {"adapter": adapter.describe()}
    result = {"family": family, "model_type": config.model_type, "task": task, "stages": stages, "details": details}
    stages["fine_tune"] = _train_steps(model, batch)
    try:
        record = prune_model(model, [batch] * 3, head_ratio=0.25, ffn_ratio=0.5, n_layers=1)
    except Exception as exc:  # a stage failure is a matrix cell, not a crash
        stages.update({s: _fail(exc) for s in STAGES})
        details["traceback"] = traceback.format_exc()[-1500:]
        return result
    details["pruning"] = {k: record[k] for k in ("layers_dropped", "heads_per_layer", "intermediate_size")}
    stages["head_prune"] = f"skipped: {record['heads_skipped_because']}" if record["heads_skipped_because"] \
        else "ok" if record["pruned_heads"] else "failed: no head removed"
    stages["ffn_prune"] = "ok" if record["intermediate_size"]["after"] < record["intermediate_size"]["before"] \
        else "failed: FFN width unchanged"
    stages["layer_drop"] = "ok" if adapter.num_layers(model) == 2 else "failed: layer count unchanged"
    model.eval()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tmp = Path(tmp)
        try:
            model.save_pretrained(tmp / "pruned")
            again = auto.from_pretrained(tmp / "pruned")
            diff = float(np.abs(as_numpy_logits(model)(numpy_batch) - as_numpy_logits(again)(numpy_batch)).max())
            stages["reload"] = "ok" if diff < 1e-5 else f"failed: reloaded logits differ by {diff:.2g}"
        except Exception as exc:
            stages["reload"] = _fail(exc)
        try:
            onnx_path = export_onnx(model, task, tmp / "model.onnx")
            details["parity_max_abs_logit_diff"] = check_parity(as_numpy_logits(model), OnnxModel(onnx_path).run,
                                                                [numpy_batch], 1e-4)
            result["inputs"] = OnnxModel(onnx_path).input_names
            stages["export"] = "ok"
        except Exception as exc:
            stages.update({s: _fail(exc) for s in ("export", "fusion", "static_int8", "dynamic_int8")})
            return result
        details["onnx_nodes_matched"] = _matched(onnx_path, adapter)
        if adapter.fusion is None:
            stages["fusion"] = f"skipped: {adapter.fusion_note}"
        else:
            try:
                fused = optimize_graph(onnx_path, tmp / "fused.onnx", adapter.fusion)
                check_parity(OnnxModel(onnx_path).run, OnnxModel(tmp / "fused.onnx").run, [numpy_batch], 1e-3)
                stages["fusion"] = "ok" if fused["fused_operators"].get("Attention") else \
                    f"partial: no Attention fused ({fused['fused_operators']})"
                details["fused_operators"] = fused["fused_operators"]
            except Exception as exc:
                stages["fusion"] = _fail(exc)
        for stage, quantize in (
                ("static_int8", lambda p: quantize_static(onnx_path, p, [numpy_batch],
                                                          exclude_patterns=HEAD_NODES + adapter.ffn_out_nodes)),
                ("dynamic_int8", lambda p: quantize_dynamic(onnx_path, p))):
            try:
                quantize(tmp / f"{stage}.onnx")
                OnnxModel(tmp / f"{stage}.onnx").run(numpy_batch)
                stages[stage] = "ok"
            except Exception as exc:
                stages[stage] = _fail(exc)
        stages["serve"] = _serve(tmp, tmp / "static_int8.onnx", task, config, artifact_out)
    return result


def _train_steps(model, batch: dict, steps: int = 8) -> str:
    """A few AdamW steps on the model's own task loss (what the pipeline's Trainer does per step):
    ``"ok"`` when the loss is finite and falls on the repeated batch."""
    import math

    import torch

    try:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        losses = []
        for _ in range(steps):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss))
        model.eval()
        if not all(math.isfinite(x) for x in losses) or losses[-1] >= losses[0]:
            return f"failed: loss {losses[0]:.3g} -> {losses[-1]:.3g} in {steps} steps"
        return "ok"
    except Exception as exc:  # a stage failure is a matrix cell, not a crash
        return _fail(exc)


def _serve(tmp: Path, onnx_path: Path, task: str, config, artifact_out: Path | None = None) -> str:
    """Install the static INT8 graph as an artifact and answer texts through the service's own
    registry (tokenize, batch, logits, post-processing), checking entity offsets."""
    import hashlib

    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from presso.core.manifest import Manifest, Task, file_checksums
    from presso.service.registry import LoadedModel

    if not onnx_path.is_file():
        return "failed: no INT8 graph to serve"
    d = tmp / "artifact"
    d.mkdir()
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + [f"w{i}" for i in range(4, 120)])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                ("[SEP]", 3)])
    tok.save(str(d / "tokenizer.json"))
    (d / "model.onnx").write_bytes(onnx_path.read_bytes())
    labels = ["O", "B-X", "I-X", "B-Y", "I-Y"] if task == "ner" else [f"class{i}" for i in range(5)]
    Manifest(name="probe", task=Task.from_short(task), labels=labels, max_seq_len=64, model_file="model.onnx",
             model_sha256=hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest(),
             files=file_checksums(d)).write(d)
    if artifact_out is not None:
        import shutil

        shutil.copytree(d, artifact_out)
    try:
        model = LoadedModel(d, ["CPUExecutionProvider"], 1)
        sequences = model.tokenize(SERVE_TEXTS)
        partials = model.infer([item for windows in sequences for item in windows])
        at = 0
        for text, windows in zip(SERVE_TEXTS, sequences):
            answer = model.assemble(text, partials[at:at + len(windows)])
            at += len(windows)
            if model.task == Task.TOKEN_CLASSIFICATION:
                if any(text[e["start"]:e["end"]] != e["text"] for e in answer["entities"]):
                    return "failed: entity offsets do not cut the text"
            elif answer["label"] not in labels:
                return f"failed: unknown label {answer['label']!r}"
        return "ok"
    except Exception as exc:
        return _fail(exc)


def _matched(onnx_path: Path, adapter) -> dict[str, int]:
    """How many exported nodes each of the adapter's node patterns matches (0 = a stale pattern)."""
    import onnx

    names = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node]
    return {key: sum(1 for n in names if any(re.search(p, n) for p in getattr(adapter, key)))
            for key in ("ffn_in_nodes", "ffn_out_nodes", "attention_score_nodes")}


def render(results: list[dict]) -> str:
    """Markdown: one row per family and task, one column per stage (``ok`` / ``-`` with the reason below)."""
    head = "| family | task | inputs | " + " | ".join(STAGES) + " |"
    lines = [head, "|" + "---|" * (len(STAGES) + 3)]
    reasons: dict[str, str] = {}
    for r in results:
        cells = []
        for stage in STAGES:
            cell = r["stages"].get(stage, "not run")
            if cell == "ok":
                cells.append("ok")
            else:
                key = f"[{len(reasons) + 1}]" if cell not in reasons.values() else \
                    next(k for k, v in reasons.items() if v == cell)
                reasons.setdefault(key, cell)
                cells.append(f"{cell.split(':')[0]} {key}")
        lines.append(f"| {r['family']} | {r['task']} | {', '.join(r.get('inputs', []))} | " + " | ".join(cells) + " |")
    lines += [""] + [f"{k} {v}" for k, v in reasons.items()]
    return "\n".join(lines) + "\n"


RESULTS_ENV = "PRESSO_ARCH_RESULTS"  # where tests/test_arch.py writes one JSON per (family, task)


def save_result(result: dict, results_dir: Path) -> Path:
    """Write one probe result as ``<family>-<task>.json`` (what the test run leaves for the matrix)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{result['family']}-{result['task']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def load_results(results_dir: Path) -> list[dict]:
    """Every saved probe result, in :data:`FAMILIES` x :data:`TASKS` order.

    Raises:
        FileNotFoundError: a (family, task) pair has no result (the test run did not cover it).
    """
    missing = [f"{f}-{t}" for f in FAMILIES for t in TASKS if not (results_dir / f"{f}-{t}.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{results_dir}: no probe results for {missing} (run pytest tests/test_arch.py "
                                f"with {RESULTS_ENV}={results_dir})")
    return [json.loads((results_dir / f"{f}-{t}.json").read_text()) for f in FAMILIES for t in TASKS]


def run(out_dir: Path, families: tuple[str, ...] = FAMILIES, results_dir: Path | None = None) -> dict:
    """Write ``arch-support.json`` and ``arch-support.md``: rendered from the results a test run
    saved in ``results_dir``, or (None) by probing every family for both tasks now."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if results_dir is not None:
        results, source = load_results(results_dir), f"the results tests/test_arch.py wrote ({RESULTS_ENV})"
    else:
        with tempfile.TemporaryDirectory() as work:
            results = [probe(f, task, Path(work)) for f in families for task in TASKS]
        source = "presso bench arch (probed now)"
    report = {"what": "tiny random model of each family through the compression stages", "source": source,
              "stages": list(STAGES), "results": results}
    (out_dir / "arch-support.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "arch-support.md").write_text(render(results))
    return report

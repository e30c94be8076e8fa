"""Compression orchestration: load data -> fine-tune -> prune + distilled recovery -> export ONNX ->
fuse the graph -> choose an INT8 variant -> evaluate every stage -> accuracy gate -> write the
artifact. Each stage logs what it produced and is timed."""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from presso.compress import artifact
from presso.compress.arch import adapter_for
from presso.compress.base_model import BaseModelInfo, load_tokenizer, packaged_base_model
from presso.compress.data import Splits
from presso.compress.evaluate import TestSet, agreement, evaluate_stage
from presso.compress.export import check_parity, export_onnx
from presso.compress.metrics import primary_metric
from presso.compress.profiles import Profile
from presso.compress.prune import prune_model
from presso.compress.choose import choose_int8
from presso.compress.gate import AccuracyGateError, check_gate
from presso.compress.quantize import optimize_graph
from presso.compress.train import as_numpy_logits, collator, enable_casing, features, fine_tune, load_model, uses_casing
from presso.core.casing import CASING_CLASSES
from presso.core.manifest import VITERBI, Task

log = logging.getLogger(__name__)
PARITY_ATOL = 1e-4
OPTIMIZED_ATOL = 1e-3  # fused attention / LayerNorm kernels reorder float sums


def cap(examples: list, limit: int | None) -> list:
    return examples if limit is None else examples[:limit]


def dir_bytes(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.glob(pattern))


def sample(examples: list, n: int, seed: int) -> list:
    """``n`` examples drawn without replacement with ``seed`` (all of them, in order, if fewer)."""
    return list(examples) if n >= len(examples) else random.Random(seed).sample(list(examples), n)


def importance_batches(tokenizer, splits: Splits, profile: Profile, examples: list, casing: bool) -> list[dict]:
    """Labelled training batches for importance scoring, sampled with the profile's seed."""
    feats = features(splits.task, tokenizer, sample(examples, profile.importance_batches * profile.batch_size,
                                                    profile.seed), splits.labels, profile, casing)
    collate = collator(splits.task, tokenizer)
    return [dict(collate(feats[i: i + profile.batch_size])) for i in range(0, len(feats), profile.batch_size)]


def calibration_encodings(encoder, splits: Splits, train: list, profile: Profile) -> list:
    """Training texts for static-quantization calibration (sampled with the profile's seed),
    tokenized like the test set."""
    texts = sample(train, profile.calibration_examples, profile.seed + 1)
    if splits.task == "ner":
        return encoder.encode_words([ex.tokens for ex in texts])
    return encoder.encode([ex.text for ex in texts])


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


class Build:
    """One build's state: data, work directory, stage records and timings; the stages are methods
    called in order by :func:`build`."""

    def __init__(self, splits: Splits, name: str, profile: Profile, work: Path, reuse_fine_tuned: bool = False,
                 base: BaseModelInfo | None = None, fine_tuned: bool = False) -> None:
        from transformers import AutoConfig

        from presso.core.encoding import TextEncoder

        self.splits, self.name, self.profile, self.work = splits, name, profile, work
        self.reuse_fine_tuned = reuse_fine_tuned
        self.task, self.metric = splits.task, primary_metric(splits.task)
        self.main_process = int(os.environ.get("RANK", "0")) == 0
        self.clock = Stopwatch()
        self.base = base or packaged_base_model()
        self.fine_tuned = fine_tuned  # ``base`` is already fine-tuned for this task: no fine-tuning stage
        # built-in corpora train for the profile's measured epochs; a user's data until it plateaus
        self.plateau = None if splits.builtin else profile.user_data
        self.train = splits.train if self.plateau else cap(splits.train, profile.max_train_examples.get(self.task))
        self.validation = cap(splits.validation, profile.max_eval_examples)
        test_examples = cap(splits.test, profile.max_eval_examples)
        log.info("stage data: %s, labels %s, train/validation/test %d/%d/%d (of %s)", splits.dataset,
                 splits.labels, len(self.train), len(self.validation), len(test_examples), splits.sizes())
        # other ranks of a distributed build never write the artifact: their copy is private
        self.out = work / "artifact" if self.main_process else Path(tempfile.mkdtemp(prefix="presso-rank-"))
        if self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True)
        self.base_config = AutoConfig.from_pretrained(self.base.path)
        self.adapter = adapter_for(self.base_config)
        positions = self.adapter.max_positions(self.base_config)
        if positions and profile.max_seq_len > positions:
            log.info("stage data: max_seq_len %d -> %d (the model's position table)", profile.max_seq_len, positions)
            self.profile = profile = profile.model_copy(update={"max_seq_len": positions})
        self.tokenizer = load_tokenizer(self.base.path)
        self.tokenizer.save_pretrained(self.out)
        self.casing = self.casing_decision()
        self.encoder = TextEncoder(self.out / "tokenizer.json", profile.max_seq_len, casing=self.casing["enabled"])
        self.test = TestSet(splits, self.encoder, test_examples)
        self.stages: list[dict] = []
        self.preds: dict[str, list] = {}
        self.histories: dict[str, dict] = {}
        self.fine_tuning: dict | None = None  # method, parameters, time, memory (None: not fine-tuned here)

    def casing_decision(self) -> dict:
        """Whether the model gets casing classes (:mod:`presso.core.casing`), and why: a reused
        checkpoint keeps what it was trained with; otherwise on when the profile asks for it for
        this task, the tokenizer lowercases and the encoder has a ``token_type_ids`` input."""
        from transformers import AutoConfig
        from tokenizers import Tokenizer

        from presso.core.casing import lowercases

        checkpoint = self.work / "fp32"
        if self.fine_tuned:
            enabled = bool(getattr(self.base_config, "presso_casing", False))
            reason = "as the given fine-tuned checkpoint was trained"
        elif self.reuse_fine_tuned and (checkpoint / "config.json").is_file():
            enabled = bool(getattr(AutoConfig.from_pretrained(checkpoint), "presso_casing", False))
            reason = "as the reused fine-tuned checkpoint was trained"
        elif getattr(self.base_config, "presso_casing", False):
            enabled, reason = True, "as the base checkpoint (fine-tuned by Presso) was trained"
        elif not self.profile.casing.get(self.task, False):
            enabled, reason = False, f"off in profile {self.profile.name!r} for {self.task}"
        elif not lowercases(Tokenizer.from_file(str(self.out / "tokenizer.json"))):
            enabled, reason = False, "the tokenizer keeps case (the model sees capitalisation already)"
        elif ("token_type_ids" not in self.tokenizer.model_input_names
              or not getattr(self.base_config, "type_vocab_size", 0)):
            enabled, reason = False, "the encoder has no token_type_ids input to carry casing classes"
        else:
            enabled, reason = True, "the tokenizer lowercases; casing classes restore capitalisation"
        record = {"enabled": enabled, "reason": reason}
        if enabled:
            record.update({"input": "token_type_ids", "classes": list(CASING_CLASSES),
                           "function": "presso.core.casing.casing_type_ids"})
        log.info("stage data: casing %s (%s)", "on" if enabled else "off", reason)
        return record

    def evaluate(self, stage: str, runtime: str, fn, size: int) -> None:
        if not self.main_process:
            return
        invariance = self.profile.invariance_examples if runtime == "onnxruntime" else 0
        record, self.preds[stage] = self.clock.run(f"evaluate[{stage}]", evaluate_stage, stage, runtime, fn,
                                                   self.test, size, self.profile.latency_runs, invariance)
        if self.stages:
            record["agreement_with_previous"] = agreement(self.preds[self.stages[-1]["stage"]], self.preds[stage])
        self.stages.append(record)
        log.info("stage %s: test %s %.4f, %d bytes, p50 batch1 %.1f ms, batch8 %.1f ms", stage, self.metric,
                 record["metrics"][self.metric], size, record["latency_ms"]["batch_1"]["p50_ms"],
                 record["latency_ms"]["batch_8"]["p50_ms"])

    def fine_tune(self):
        """The fp32 fine-tuned model (the teacher and the gate's reference); with ``reuse_fine_tuned``
        an earlier build's ``work/fp32`` checkpoint with the same labels is loaded instead of trained.

        Raises:
            ValueError: the reused checkpoint's labels differ from the dataset's.
        """
        checkpoint = self.base.path if self.fine_tuned else self.work / "fp32"
        if self.fine_tuned or (self.reuse_fine_tuned and (checkpoint / "config.json").is_file()):
            model = load_model(self.task, checkpoint)
            labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
            if labels != list(self.splits.labels):
                raise ValueError(f"{checkpoint} was fine-tuned for labels {labels}, not {self.splits.labels}")
            log.info("stage fine_tune: %s %s", "starting from the fine-tuned" if self.fine_tuned else "reusing",
                     checkpoint)
            self.histories["fine_tune"] = {"reused_checkpoint": str(checkpoint),
                                           **({"given_with": "--fine-tuned"} if self.fine_tuned else {})}
        else:
            model = load_model(self.task, self.base.path, self.splits.labels)
            if self.casing["enabled"] and not uses_casing(model):
                enable_casing(model)
            model = self.fine_tune_weights(model)
            if self.main_process:  # a complete Hugging Face folder: ``--fine-tuned`` accepts it as is
                model.save_pretrained(checkpoint)
                self.tokenizer.save_pretrained(checkpoint)
        self.evaluate("fp32", "pytorch", as_numpy_logits(model), dir_bytes(checkpoint, "*.safetensors"))
        return model

    def fine_tune_weights(self, model):
        """Train ``model`` with the profile's method: every weight (``full``), or LoRA adapters
        (:mod:`presso.compress.lora`) merged into the weights afterwards; records the method,
        trainable parameters, time and peak resident memory in ``self.fine_tuning``."""
        from presso.compress import lora

        profile, method = self.profile, self.profile.method
        if method == "lora":
            model = lora.wrap(model, self.adapter, profile.lora, self.task, self.casing["enabled"])
            profile = profile.model_copy(update={"learning_rate": profile.lora.learning_rate})
        counts = lora.parameter_counts(model)
        model, self.histories["fine_tune"] = self.clock.run(
            "fine_tune", fine_tune, model, self.tokenizer, self.splits, profile, self.work,
            profile.epochs[self.task], self.train, self.validation, "fine_tune", plateau=self.plateau)
        self.fine_tuning = {"method": method, "trainable_parameters": counts["trainable"],
                            "total_parameters": counts["total"], "learning_rate": profile.learning_rate,
                            "seconds": self.clock.times["fine_tune"], "peak_rss_bytes": lora.peak_rss_bytes()}
        if method == "lora":
            model = lora.merge(model)
            self.fine_tuning["lora"] = {**profile.lora.model_dump(), "target_modules": list(
                profile.lora.target_modules or self.adapter.lora_targets), "merged": "merge_and_unload"}
        log.info("stage fine_tune: %s, %d of %d parameters trained", method, counts["trainable"], counts["total"])
        return model

    def prune(self, model):
        """Structured pruning, then a recovery fine-tune distilled from the fp32 model (skipped, and
        recorded as such, when the profile says ``prune: false``)."""
        if not self.profile.prune:
            log.info("stage prune: skipped (profile prune: false); the fine-tuned model is exported as it is")
            return model, {"skipped": True, "reason": "profile prune: false"}
        teacher = copy.deepcopy(model) if self.profile.distill_alpha > 0 else None
        batches = importance_batches(self.tokenizer, self.splits, self.profile, self.train, uses_casing(model))
        pruning = self.clock.run("prune", prune_model, model, batches, self.profile.prune_heads_ratio,
                                 self.profile.prune_ffn_ratio, self.profile.prune_layers)
        model, self.histories["recovery"] = self.clock.run(
            "recovery", fine_tune, model, self.tokenizer, self.splits, self.profile, self.work,
            self.profile.recovery_epochs, self.train, self.validation, "recovery", teacher, self.plateau)
        pruning["recovery"] = {"epochs": None if self.plateau else self.profile.recovery_epochs,
                               "budget": self.histories["recovery"]["budget"],
                               "distillation": None if teacher is None else {
            "teacher": "fp32 fine-tuned", "alpha": self.profile.distill_alpha,
            "temperature": self.profile.distill_temperature}}
        return model, pruning

    def export(self, model) -> tuple[Path, object, dict]:
        from presso.core.runtime import OnnxModel

        model.save_pretrained(self.work / "pruned")
        torch_logits = as_numpy_logits(model)
        self.evaluate("pruned_fp32", "pytorch", torch_logits, dir_bytes(self.work / "pruned", "*.safetensors"))
        fp32_onnx = self.clock.run("export", export_onnx, model, self.task, self.work / "model_fp32.onnx")
        onnx_fp32 = OnnxModel(fp32_onnx)
        parity = check_parity(torch_logits, onnx_fp32.run, self.test.sample_batches(), PARITY_ATOL)
        log.info("stage export: max |logit diff| vs PyTorch %.2e (tolerance %g)", parity, PARITY_ATOL)
        self.evaluate("pruned_onnx_fp32", "onnxruntime", onnx_fp32.run, fp32_onnx.stat().st_size)
        return fp32_onnx, onnx_fp32, {"library": "optimum.exporters.onnx", "opset": 17,
                                      "dynamic_axes": ["batch", "sequence"], "parity_max_abs_logit_diff": parity,
                                      "parity_tolerance": PARITY_ATOL}

    def optimize(self, fp32_onnx: Path, onnx_fp32) -> tuple[Path | None, dict]:
        """Fused graph for the dynamic INT8 candidates, kept only if it matches the unfused one."""
        from presso.core.runtime import OnnxModel

        path = self.work / "model_fp32_optimized.onnx"
        try:
            if self.adapter.fusion is None:
                log.info("stage optimize: skipped for %s: %s", self.adapter.family, self.adapter.fusion_note)
                return None, {"skipped": self.adapter.fusion_note}
            record = self.clock.run("optimize", optimize_graph, fp32_onnx, path, self.adapter.fusion)
            record["parity_max_abs_logit_diff"] = check_parity(onnx_fp32.run, OnnxModel(path).run,
                                                               self.test.sample_batches(), OPTIMIZED_ATOL)
            return path, record
        except Exception as exc:  # fusion is an optimisation: without it the plain graph is used
            log.warning("graph optimization not used: %s", exc)
            return None, {"error": f"{type(exc).__name__}: {exc}"[:500]}

    def quantize(self, fp32_onnx: Path, optimized: Path | None, onnx_fp32) -> tuple[Path, dict]:
        from presso.core.encoding import pad_batch
        from presso.core.runtime import OnnxModel

        int8_path = self.out / "model.onnx"
        calibration = [pad_batch([e]) for e in calibration_encodings(self.encoder, self.splits, self.train,
                                                                     self.profile)]
        selection = TestSet(self.splits, self.encoder, cap(self.validation, self.profile.selection_examples))
        quantization = self.clock.run("quantize", choose_int8, fp32_onnx, optimized, onnx_fp32, int8_path,
                                      calibration, selection, self.metric, self.profile.int8_max_drop_points,
                                      self.profile.require_batch_invariance, self.work,
                                      min_agreement=self.profile.min_int8_agreement + self.profile.int8_selection_margin,
                                      fp32_fallback=self.profile.int8_fp32_fallback or not self.profile.int8,
                                      only_fp32=not self.profile.int8, adapter=self.adapter,
                                      timing_shape=(8, min(128, self.profile.max_seq_len)))
        self.evaluate("int8", "onnxruntime", OnnxModel(int8_path).run, int8_path.stat().st_size)
        return int8_path, quantization

    def write_reference(self, int8_path: Path, n: int = 4) -> dict:
        """``reference.json``: a few test texts and the shipped graph's logits for each, which the
        service re-runs at load to catch a machine that computes the graph otherwise."""
        import platform

        from presso.compress.quantize import choose_preset
        from presso.core.reference import reference_outputs
        from presso.core.runtime import OnnxModel

        texts = [" ".join(ex.tokens) if self.task == "ner" else ex.text for ex in self.splits.test[:n]]
        reference = reference_outputs(self.encoder, OnnxModel(int8_path).run, texts,
                                      built_on=f"{platform.machine()}, quantization preset {choose_preset()}")
        path = self.out / "reference.json"
        path.write_text(json.dumps(reference) + "\n")
        return {"file": path.name, "sha256": artifact.sha256_file(path), "texts": len(texts),
                "tolerance": reference["tolerance"]}

    def manifest(self, inputs: list[str], pruning: dict, export: dict, optimization: dict, quantization: dict,
                 gate: dict) -> dict:
        by_stage = {s["stage"]: s for s in self.stages}
        final, first, metric = by_stage["int8"], by_stage["fp32"], self.metric
        return {
            "name": self.name,
            "task": Task.from_short(self.task).value,
            "labels": self.splits.labels,
            "label_scheme": "IOB2" if self.task == "ner" else "single-label",
            "max_seq_len": self.profile.max_seq_len,
            "inputs": inputs,
            "seed": self.profile.seed,
            "casing": self.casing,
            **({"decoding": VITERBI} if self.task == "ner" else {}),
            "base_model": {"name": self.base.name, "version": self.base.version, "model_type": self.base.model_type},
            "architecture": {"model_type": self.base_config.model_type, **self.adapter.describe()},
            "dataset": {"name": self.splits.dataset, "sizes": self.splits.sizes(),
                        "used": {"train": len(self.train), "validation": len(self.validation),
                                 "test": len(self.test.encoded)}, **self.splits.notes},
            "profile": self.profile.model_dump(),
            "training_budget": {stage: self.histories[stage]["budget"] for stage in ("fine_tune", "recovery")
                                if "budget" in self.histories.get(stage, {})},
            "metric": metric,
            "stages": {s["stage"]: {k: v for k, v in s.items() if k != "stage"} for s in self.stages},
            "fine_tune_reused_from": self.histories["fine_tune"].get("reused_checkpoint"),
            "fine_tuning": self.fine_tuning,
            "summary": {
                f"test_{metric}_fp32": first["metrics"][metric],
                f"test_{metric}_int8": final["metrics"][metric],
                f"{metric}_drop_points": round(100 * (first["metrics"][metric] - final["metrics"][metric]), 2),
                "size_ratio_int8_vs_fp32": round(final["size_bytes"] / first["size_bytes"], 4),
                "int8_agreement_with_fp32_onnx": final["agreement_with_previous"],
                "int8_batch_invariance": final["batch_invariance"]["same_prediction_alone_and_batched"],
                "int8_variant": quantization["candidate"],
                **{f"{stage}_ended_by": self.histories[stage]["budget"]["ended_by"]
                   for stage in ("fine_tune", "recovery") if "budget" in self.histories.get(stage, {})},
                **({"test_split": "the validation split (no test file given)"}
                   if self.splits.notes.get("test", {}).get("same_as") == "validation" else {}),
            },
            "accuracy_gate": gate,
            "pruning": pruning,
            "export": export,
            "graph_optimization": optimization,
            "quantization": quantization,
            "stage_seconds": self.clock.times,
        }


    def finish(self, model, pruning: dict, models_dir: Path) -> dict:
        """Rank 0's part: export, fuse, quantize, evaluate, gate and install the artifact."""
        fp32_onnx, onnx_fp32, export = self.export(model)
        optimized, optimization = self.optimize(fp32_onnx, onnx_fp32)
        int8_path, quantization = self.quantize(fp32_onnx, optimized, onnx_fp32)
        by_stage = {s["stage"]: s for s in self.stages}
        gate = check_gate(by_stage, self.metric, self.profile.max_drop_points, self.profile.min_int8_agreement)
        log.info("accuracy gate: %s", gate["message"])
        from presso.core.runtime import OnnxModel

        manifest = self.manifest(OnnxModel(int8_path).input_names, pruning, export, optimization, quantization, gate)
        report_path = models_dir / f"{self.name}.gate-report.json"
        if not gate["passed"]:
            models_dir.mkdir(parents=True, exist_ok=True)
            report_path.write_text(json.dumps({"accuracy_gate": gate, "manifest": manifest}, indent=2) + "\n")
            raise AccuracyGateError({**gate, "report_path": str(report_path)})
        report_path.unlink(missing_ok=True)
        manifest["reference"] = self.write_reference(int8_path)
        report = {**self.histories, "stages": self.stages, "stage_seconds": self.clock.times}
        manifest = artifact.finalize(self.out, manifest, report)
        final_dir = models_dir / self.name
        if final_dir.exists():
            shutil.rmtree(final_dir)
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.out), final_dir)
        log.info("artifact %s written: %s", final_dir, manifest["summary"])
        return manifest


def build(splits: Splits, name: str, models_dir: Path, profile: Profile, work_dir: Path | None = None,
          reuse_fine_tuned: bool = False, base: BaseModelInfo | None = None, fine_tuned: bool = False) -> dict:
    """Run every stage and write ``models_dir/name``; returns the manifest.

    ``reuse_fine_tuned`` (needs ``work_dir``) starts from that directory's fp32 checkpoint when an
    earlier build left one, so compression settings can be iterated without fine-tuning again.
    ``base``: the encoder to fine-tune (default: the packaged MiniLM; see :mod:`presso.compress.base_model`);
    with ``fine_tuned`` it is already fine-tuned for the task (``splits.labels`` in its ``id2label``
    order, :func:`presso.compress.base_model.fine_tuned_labels`): it is not trained again but is the fp32
    stage, the distillation teacher and the gate's reference.

    Intermediate checkpoints (``fp32/``, ``pruned/``), the fp32 ONNX models and every INT8
    candidate go to ``work_dir`` (kept) or a temporary directory (deleted).

    Raises:
        compress.export.ExportParityError: the ONNX export disagrees with PyTorch.
        compress.gate.AccuracyGateError: the final model failed the accuracy gate; nothing is
            installed under ``models_dir/name`` and the gate record is written to
            ``models_dir/name.gate-report.json``.
    """
    from transformers import set_seed

    set_seed(profile.seed)
    keep = work_dir is not None
    work = Path(work_dir) if keep else scratch_dir(name)
    try:
        b = Build(splits, name, profile, work, reuse_fine_tuned and keep, base, fine_tuned)
        model = b.fine_tune()
        model, pruning = b.prune(model)
        if not b.main_process:  # under torchrun / accelerate, rank 0 exports, quantizes and writes
            wait_for_other_ranks()
            return {}
        try:
            return b.finish(model, pruning, models_dir)
        finally:
            wait_for_other_ranks()
    finally:
        if not keep and int(os.environ.get("RANK", "0")) == 0:
            shutil.rmtree(work, ignore_errors=True)


def scratch_dir(name: str) -> Path:
    """A temporary work directory. The ranks of a distributed build share one (named after the
    torchrun run id), so every rank reloads the same best checkpoint and prunes identically."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("MASTER_PORT")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and run_id:
        path = Path(tempfile.gettempdir()) / f"presso-{name}-run-{run_id}"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix=f"presso-{name}-"))


def wait_for_other_ranks() -> None:
    """Barrier of a distributed build (torchrun / accelerate): the other ranks wait until rank 0
    has written the artifact (or failed), then exit 0. A no-op in a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()

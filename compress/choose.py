"""Choosing the shipped INT8 variant: every candidate is built, scored on validation data, checked
for batch invariance and timed on one fixed shape; the fastest that keeps accuracy (and, when
required, batch invariance) ships, and the manifest records every candidate and why.

Candidates (see :mod:`presso.compress.quantize`):

* ``static``: QDQ, u8 activations / s8 per-channel weights, classifier head and pooler fp32;
* ``static_ffn_output_fp32``: the same with the FFN output projections fp32 too;
* ``static_ffn_fp32``: with both FFN projections fp32 (attention INT8);
* ``static_scores_fp32`` / ``static_ffn_scores_fp32``: ``static`` / ``static_ffn_fp32`` with the two
  activation-by-activation products of attention (``Q K^T`` and ``P V``, whose inputs have no fixed
  range) fp32 too: only weight matrices are INT8;
* ``dynamic_per_channel`` / ``dynamic``: dynamic INT8 on the fused graph (ONNX Runtime's
  recommended path for BERT), per-channel or per-tensor weights, ``reduce_range`` without VNNI.
  Dynamic INT8 computes activation scales per batch, so it is only eligible when the profile does
  not require batch invariance.
* ``fp32``: no quantization (the fused fp32 graph, else the plain one): shipped only when no INT8
  variant is eligible and the profile allows the fallback, so a build never fails for INT8 alone.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from presso.compress.evaluate import TestSet, agreement, fixed_shape_latency_ms
from presso.compress.arch import Adapter
from presso.compress.arch.bert import BERT
from presso.compress.quantize import HEAD_NODES, quantize_dynamic, quantize_static

log = logging.getLogger(__name__)
TIMING_SHAPE = (8, 128)  # batch x tokens used to rank candidates by speed
INVARIANCE_EXAMPLES = 200


def choose_int8(fp32_onnx: Path, optimized_onnx: Path | None, fp32_model, output: Path, calibration: list,
                selection: TestSet, metric: str, max_drop_points: float, require_invariance: bool,
                work: Path, timing_shape: tuple[int, int] = TIMING_SHAPE, min_agreement: float = 0.0,
                fp32_fallback: bool = True, adapter: Adapter = BERT, only_fp32: bool = False) -> dict:
    """Build every candidate, keep the fastest eligible one at ``output``.

    ``adapter`` names the architecture's FFN and attention-score nodes (:mod:`presso.compress.arch`).

    Eligible: validation ``metric`` within ``max_drop_points`` of the fp32 ONNX model, predictions
    equal to the fp32 ONNX model's on at least ``min_agreement`` of validation words / texts (the
    accuracy gate's check plus a margin, so the shipped variant passes it on test too), and the
    same predictions alone and batched when ``require_invariance``. If no INT8 variant is
    eligible, the fp32 graph ships when ``fp32_fallback`` (it is its own source: agreement 1.0);
    otherwise the most faithful batch-invariant (or, without that requirement, any) candidate
    ships and the accuracy gate decides. ``only_fp32`` builds no INT8 candidate: the fp32 graph
    ships (the profile's ``int8: false``).

    Returns:
        The chosen candidate's settings, ``chosen_because``, and every candidate's record.
    """
    from presso.core.runtime import OnnxModel

    reference_preds = selection.predict(fp32_model.run)
    reference = selection.metrics(reference_preds)[metric]
    ffn_output = adapter.ffn_out_nodes
    ffn = adapter.ffn_out_nodes + adapter.ffn_in_nodes
    scores = adapter.attention_score_nodes
    builders = [
        ("static", lambda p: quantize_static(fp32_onnx, p, calibration, exclude_patterns=HEAD_NODES)),
        ("static_ffn_output_fp32", lambda p: quantize_static(fp32_onnx, p, calibration,
                                                              exclude_patterns=HEAD_NODES + ffn_output)),
        ("static_ffn_fp32", lambda p: quantize_static(fp32_onnx, p, calibration,
                                                       exclude_patterns=HEAD_NODES + ffn)),
        ("static_scores_fp32", lambda p: quantize_static(fp32_onnx, p, calibration,
                                                          exclude_patterns=HEAD_NODES + scores)),
        ("static_ffn_scores_fp32", lambda p: quantize_static(
            fp32_onnx, p, calibration, exclude_patterns=HEAD_NODES + ffn + scores)),
        ("dynamic_per_channel", lambda p: quantize_dynamic(optimized_onnx or fp32_onnx, p, per_channel=True)),
        ("dynamic", lambda p: quantize_dynamic(optimized_onnx or fp32_onnx, p, per_channel=False)),
    ]
    if only_fp32:
        builders = []
    if fp32_fallback or only_fp32:
        builders.append(("fp32", lambda p: _copy_fp32(optimized_onnx or fp32_onnx, p)))
    timing = f"p50_ms_{timing_shape[0]}x{timing_shape[1]}"
    tried = []
    for name, build in builders:
        if name == "fp32" and any(t.get("eligible") for t in tried):
            tried.append({"candidate": name, "skipped": "an INT8 variant is eligible"})
            continue
        path = work / f"int8-{name}.onnx"
        try:
            settings = build(path)
        except Exception as exc:  # a quantizer failure rules the candidate out, it does not stop the build
            log.warning("INT8 candidate %s failed: %s", name, exc)
            tried.append({"candidate": name, "error": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        model = OnnxModel(path)
        preds = selection.predict(model.run)
        score = selection.metrics(preds)[metric]
        n = min(INVARIANCE_EXAMPLES, len(preds))
        invariance = sum(selection.predict_alone(model.run, i) == preds[i] for i in range(n)) / max(1, n)
        score = float(score)
        record = {"candidate": name, f"validation_{metric}": score,
                  "drop_points": round(100 * (float(reference) - score), 2),
                  "batch_invariance": round(invariance, 4), "size_bytes": path.stat().st_size,
                  timing: fixed_shape_latency_ms(model.run, *timing_shape)["p50_ms"],
                  "graph": "fused" if name.startswith(("dynamic", "fp32")) and optimized_onnx else "plain",
                  "settings": settings}
        record["agreement_with_fp32"] = agreement(reference_preds, preds)
        record["eligible"] = name == "fp32" or bool(record["drop_points"] <= max_drop_points
                                  and record["agreement_with_fp32"] >= min_agreement
                                  and (invariance == 1.0 or not require_invariance))
        tried.append(record)
        log.info("INT8 candidate %s: validation %s %.4f (fp32 ONNX %.4f), invariance %.3f, %.1f ms at %s, %s",
                 name, metric, score, reference, invariance, record[timing], timing_shape,
                 "eligible" if record["eligible"] else "not eligible")
    built = [t for t in tried if "eligible" in t]
    eligible = [t for t in built if t["eligible"] and t["candidate"] != "fp32"]
    fallback = [t for t in built if t["eligible"] and t["candidate"] == "fp32"]
    if eligible:
        chosen = min(eligible, key=lambda t: t[timing])
        reason = (f"fastest at {timing_shape[0]}x{timing_shape[1]} of the candidates within {max_drop_points} "
                  f"validation points of fp32 ONNX, agreeing on >= {min_agreement:.1%} of its predictions"
                  + (" and batch-invariant" if require_invariance else ""))
    elif fallback and only_fp32:
        chosen = fallback[0]
        reason = "INT8 not asked for (profile int8: false); shipping the fp32 graph"
    elif fallback:
        chosen = fallback[0]
        reason = (f"no INT8 variant within {max_drop_points} validation points agrees with fp32 ONNX on "
                  f">= {min_agreement:.1%} of validation predictions" + (" and is batch-invariant" if require_invariance
                                                                          else "") + "; shipping fp32")
        log.warning("INT8: %s", reason)
    else:
        pool = [t for t in built if t["batch_invariance"] == 1.0 or not require_invariance] or built
        chosen = max(pool, key=lambda t: (t["agreement_with_fp32"], t[f"validation_{metric}"]))
        reason = "no eligible candidate; the most faithful to fp32 ONNX" + (
            " of the batch-invariant ones" if require_invariance else "")
    shutil.copy(work / f"int8-{chosen['candidate']}.onnx", output)
    chosen["chosen"] = True
    log.info("INT8: shipping %s (%s)", chosen["candidate"], reason)
    return {**chosen["settings"], "candidate": chosen["candidate"], "chosen_because": reason,
            f"validation_{metric}_fp32_onnx": float(reference), "candidates": tried,
            "selection": {"examples": len(selection.encoded), "min_agreement": min_agreement},
            "cpu": chosen["settings"]["chosen_because"]}


def _copy_fp32(source: Path, output: Path) -> dict:
    shutil.copy(source, output)
    return {"method": "none (fp32)", "source": source.name, "chosen_because": "fp32 fallback"}

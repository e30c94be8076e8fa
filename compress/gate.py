"""The accuracy gate: a build ships only if the final model kept its accuracy.

Two checks, both on the test split:

* the shipped INT8 model's metric (entity micro F1 / accuracy) may lose at most
  ``max_drop_points`` points against the fp32 fine-tuned model (the whole compression);
* INT8 and its fp32 source (the pruned ONNX model it was quantized from) must agree on at least
  ``min_int8_agreement`` of test words (NER) or texts (classification): quantization alone must
  not change predictions, even where the metric would not show it.

A failed gate names the stage that lost the most, so the report says what to change.
"""

from __future__ import annotations

STAGE_ORDER = ("fp32", "pruned_fp32", "pruned_onnx_fp32", "int8")
STAGE_CAUSE = {"pruned_fp32": "pruning and recovery", "pruned_onnx_fp32": "ONNX export", "int8": "INT8 quantization"}


class AccuracyGateError(RuntimeError):
    """The final model failed the accuracy gate; ``report`` holds the gate record."""

    def __init__(self, report: dict) -> None:
        super().__init__(report["message"])
        self.report = report


def check_gate(stages: dict[str, dict], metric: str, max_drop_points: float, min_int8_agreement: float) -> dict:
    """Evaluate the gate on per-stage records (``stages[name]["metrics"][metric]``, and
    ``stages["int8"]["agreement_with_previous"]``).

    Returns:
        ``{"passed", "metric", "drop_points", "max_drop_points", "int8_agreement_with_fp32",
        "min_int8_agreement", "per_stage", "failures", "message"}``.
    """
    scores = {s: stages[s]["metrics"][metric] for s in STAGE_ORDER if s in stages}
    per_stage, previous = [], None
    for stage, score in scores.items():
        per_stage.append({"stage": stage, metric: score,
                          "drop_points_vs_previous": None if previous is None else round(100 * (previous - score), 2)})
        previous = score
    drop = round(100 * (scores["fp32"] - scores["int8"]), 2)
    agreement = stages["int8"].get("agreement_with_previous", 1.0)
    failures = []
    if drop > max_drop_points:
        worst = max(per_stage[1:], key=lambda s: s["drop_points_vs_previous"])
        failures.append({"check": "metric_drop", "stage": worst["stage"],
                         "message": f"test {metric} fell {drop:.2f} points from fp32 ({scores['fp32']:.4f}) to INT8 "
                                    f"({scores['int8']:.4f}), more than {max_drop_points}; stage {worst['stage']} "
                                    f"({STAGE_CAUSE[worst['stage']]}) lost the most: "
                                    f"{worst['drop_points_vs_previous']:.2f} points"})
    if agreement < min_int8_agreement:
        failures.append({"check": "int8_agreement", "stage": "int8",
                         "message": f"INT8 agrees with its fp32 source on {agreement:.2%} of test predictions, "
                                    f"fewer than {min_int8_agreement:.0%} (stage int8, INT8 quantization)"})
    message = "; ".join(f["message"] for f in failures) or (
        f"passed: test {metric} {-drop:+.2f} points vs fp32 (bound -{max_drop_points}), INT8 agreement {agreement:.2%} "
        f"(bound {min_int8_agreement:.0%})")
    return {"passed": not failures, "metric": metric, "drop_points": drop, "max_drop_points": max_drop_points,
            "int8_agreement_with_fp32": agreement, "min_int8_agreement": min_int8_agreement,
            "per_stage": per_stage, "failures": failures, "message": message}

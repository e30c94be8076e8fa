"""Choosing a cascade's thresholds (pure; ``presso calibrate`` runs the models and writes the file).

On a set of texts, every step's model answers every text (its answer and confidence); a text's
cascade answer is the first step's whose confidence reaches that step's threshold, else the last
model's. *Agreement* is the share of texts whose cascade answer is identical to the last model's
(:func:`answer_key`), *share* the fraction of texts each step answers.

:func:`choose_thresholds` lowers each step's threshold, in order, as far as the disagreement budget
``floor((1 - target) x n)`` allows: step ``i`` of ``k - 1`` thresholded steps may use up to
``(i + 1) / (k - 1)`` of it, counting what earlier steps used, so every cheap step gets a share and
the total stays within the target. Texts with equal confidence are answered together (a
threshold cannot split them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def answer_key(task: str, result: dict) -> tuple:
    """What must be identical for two answers to agree: the label (``classify``) or every entity
    span's ``(start, end, label)`` (``ner``); scores are ignored."""
    if task == "classify":
        return (result["label"],)
    return tuple((e["start"], e["end"], e["label"]) for e in result["entities"])


@dataclass(frozen=True)
class Calibration:
    """Thresholds of the thresholded steps and what they give on the calibration texts.

    ``shares`` has one entry per step (the last included): the fraction of texts it answers.
    """

    thresholds: list[float]
    agreement: float
    shares: list[float]
    examples: int
    target: float


def choose_thresholds(confidences: list[list[float]], agrees: list[list[bool]], target: float = 0.995) -> Calibration:
    """Thresholds for a cascade of ``len(confidences) + 1`` steps.

    Args:
        confidences: per thresholded step (all but the last), each text's confidence in [0, 1].
        agrees: per thresholded step, whether its answer to each text is identical to the last model's.
        target: least agreement with the last model, in [0, 1].

    Raises:
        ValueError: no steps or texts, lists of different lengths, or a target outside [0, 1].
    """
    if not confidences or not confidences[0]:
        raise ValueError("need at least one thresholded step and one text")
    n = len(confidences[0])
    if any(len(c) != n for c in confidences) or len(agrees) != len(confidences) or any(len(a) != n for a in agrees):
        raise ValueError("every step needs a confidence and an agreement for every text")
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target must be in [0, 1], got {target}")
    budget = math.floor((1.0 - target) * n + 1e-9)
    open_texts = list(range(n))
    used, thresholds, answered_counts = 0, [], []
    steps = len(confidences)
    for i, (conf, agree) in enumerate(zip(confidences, agrees)):
        allowed = math.floor(budget * (i + 1) / steps + 1e-9) - used
        threshold, answered, misses = _lowest_threshold([(conf[t], agree[t]) for t in open_texts], allowed)
        thresholds.append(threshold)
        answered_counts.append(answered)
        used += misses
        open_texts = [t for t in open_texts if conf[t] < threshold]
    answered_counts.append(len(open_texts))
    return Calibration(thresholds=thresholds, agreement=round(1.0 - used / n, 6),
                       shares=[round(a / n, 6) for a in answered_counts], examples=n, target=target)


def _lowest_threshold(scored: list[tuple[float, bool]], allowed: int) -> tuple[float, int, int]:
    """The lowest threshold whose answered texts (confidence >= it) disagree at most ``allowed``
    times: ``(threshold, answered, disagreements)``. When none fits it is 1.0, which still answers
    texts of confidence exactly 1.0 (their disagreements are counted, never hidden)."""
    groups: dict[float, list[int]] = {}
    for conf, agree in scored:
        groups.setdefault(conf, [0, 0])
        groups[conf][0] += 1
        groups[conf][1] += 0 if agree else 1
    best = (1.0, *groups.get(1.0, [0, 0]))  # the highest threshold there is still answers confidence 1.0
    answered, misses = best[1], best[2]
    for conf in sorted((c for c in groups if c < 1.0), reverse=True):
        count, wrong = groups[conf]
        if misses + wrong > allowed:
            break
        answered, misses = answered + count, misses + wrong
        best = (conf, answered, misses)
    return best

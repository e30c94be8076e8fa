"""Task metrics shared by training-time evaluation and stage evaluation.

NER: entity-level precision/recall/F1 with seqeval (default conlleval-compatible mode), micro
average and per entity type. Classification: accuracy and macro-F1 (scikit-learn).
"""

from __future__ import annotations

from typing import Sequence


def ner_metrics(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """Entity-level metrics for IOB2 tag sequences (one list of tags per sentence).

    Returns:
        ``{"f1", "precision", "recall", "per_type": {TYPE: {"f1", "precision", "recall", "support"}}}``.
    """
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    report = classification_report(true_tags, pred_tags, output_dict=True, zero_division=0)
    per_type = {
        k: {"f1": round(v["f1-score"], 4), "precision": round(v["precision"], 4),
            "recall": round(v["recall"], 4), "support": int(v["support"])}
        for k, v in report.items() if "avg" not in k
    }
    return {
        "f1": round(f1_score(true_tags, pred_tags, zero_division=0), 4),
        "precision": round(precision_score(true_tags, pred_tags, zero_division=0), 4),
        "recall": round(recall_score(true_tags, pred_tags, zero_division=0), 4),
        "per_type": per_type,
    }


def _entity_counts(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]):
    """Per sentence ``(correct, predicted, gold)`` entity counts, entities as seqeval's default mode
    reads them (``seqeval.metrics.sequence_labeling.get_entities``)."""
    import numpy as np
    from seqeval.metrics.sequence_labeling import get_entities

    counts = []
    for gold, pred in zip(true_tags, pred_tags):
        g, p = set(get_entities(list(gold))), set(get_entities(list(pred)))
        counts.append((len(g & p), len(p), len(g)))
    return np.array(counts, dtype=np.int64).reshape(-1, 3)


def paired_f1_gap_interval(true_tags: Sequence[Sequence[str]], pred_a: Sequence[Sequence[str]],
                           pred_b: Sequence[Sequence[str]], resamples: int = 2000, confidence: float = 0.95,
                           seed: int = 0) -> dict:
    """Entity F1 of ``pred_a`` minus that of ``pred_b`` (points) with a paired bootstrap interval:
    sentences are resampled with replacement and both systems are scored on the same resample
    (Koehn 2004, "Statistical significance tests for machine translation evaluation"; Berg-Kirkpatrick
    et al. 2012). It says how far a gap measured on a few hundred sentences can move with the sample.

    Returns:
        ``{"gap_points", "low_points", "high_points", "confidence", "resamples", "share_a_worse"}``;
        ``share_a_worse`` is the share of resamples where ``pred_a`` scores below ``pred_b``.
    """
    import numpy as np

    a, b = _entity_counts(true_tags, pred_a), _entity_counts(true_tags, pred_b)

    def f1(c):  # c: [..., 3] summed counts
        denominator = c[..., 1] + c[..., 2]
        return np.where(denominator > 0, 2 * c[..., 0] / np.maximum(denominator, 1), 0.0)

    picks = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    gaps = 100 * (f1(a[picks].sum(axis=1)) - f1(b[picks].sum(axis=1)))
    tail = (1 - confidence) / 2
    return {"gap_points": round(float(100 * (f1(a.sum(axis=0)) - f1(b.sum(axis=0)))), 2),
            "low_points": round(float(np.quantile(gaps, tail)), 2),
            "high_points": round(float(np.quantile(gaps, 1 - tail)), 2),
            "confidence": confidence, "resamples": resamples,
            "share_a_worse": round(float((gaps < 0).mean()), 3)}


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict:
    """``{"accuracy", "macro_f1"}`` for label strings."""
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(float(f1_score(y_true, y_pred, average="macro", zero_division=0)), 4),
    }


def primary_metric(task: str) -> str:
    """The metric that gates and selects models: entity F1 for NER, accuracy for classification."""
    return "f1" if task == "ner" else "accuracy"

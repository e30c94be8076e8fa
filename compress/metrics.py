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

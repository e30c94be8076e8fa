"""Sequence classification post-processing: logits to label, score and per-label probabilities."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from presso.core.spans import softmax


def classify_logits(logits: np.ndarray, labels: Sequence[str]) -> dict:
    """One text's result from its logits ``[num_labels]``.

    Returns:
        ``{"label": str, "score": float, "scores": {label: probability}}``.
    """
    probs = softmax(logits.astype(np.float32))
    best = int(probs.argmax())
    return {
        "label": labels[best],
        "score": round(float(probs[best]), 6),
        "scores": {label: round(float(p), 6) for label, p in zip(labels, probs)},
    }

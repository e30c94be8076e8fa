"""Weighted combination of several models' outputs over one label set (pure; used by the service's
top-k expert routes and testable without a server).

Each expert's labels are first mapped onto the route's labels by a *label map* (classification:
label -> label; token classification: entity type -> entity type, applied to the ``B-``/``I-``
prefixed tags, ``O`` to ``O``); probabilities of labels that map to the same target add up. The
mapped distributions are then averaged with the router's weights (renormalised over the experts
that ran), as in a mixture of experts (Jacobs et al. 1991): classification per text, token
classification per word (words are matched by their character span; an expert that did not see a
word leaves it to the others), and decoded as a single model's output is.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class LabelMapError(ValueError):
    """A label map that leaves a label unmapped or maps outside the route's label set."""


def iob_labels(types: Sequence[str]) -> list[str]:
    """The IOB2 tag set of entity ``types``: ``O``, then ``B-``/``I-`` of each type in order."""
    return ["O", *(f"{p}-{t}" for t in types for p in ("B", "I"))]


def entity_types(labels: Sequence[str]) -> list[str]:
    """Entity types of an IOB2 tag set, in first-seen order."""
    return list(dict.fromkeys(label[2:] for label in labels if label[:2] in ("B-", "I-")))


def mapping_matrix(source: Sequence[str], target: Sequence[str], label_map: dict[str, str] | None,
                   iob: bool) -> np.ndarray:
    """``[len(source), len(target)]`` 0/1 matrix sending each source label to its mapped target.

    ``label_map`` maps labels (``iob`` False) or entity types (``iob`` True); None is the identity.

    Raises:
        LabelMapError: a source label (type) without a mapping, or one mapped outside ``target``.
    """
    index = {label: i for i, label in enumerate(target)}
    matrix = np.zeros((len(source), len(target)), dtype=np.float32)
    for i, label in enumerate(source):
        if iob and label[:2] in ("B-", "I-"):
            kind, prefix = label[2:], label[:2]
            mapped = (label_map or {}).get(kind, kind if label_map is None else None)
            name = None if mapped is None else prefix + mapped
        elif iob:
            name = label if label_map is None or label not in label_map else label_map[label]
        else:
            name = (label_map or {}).get(label, label if label_map is None else None)
        if name is None:
            raise LabelMapError(f"label {label[2:] if iob and label[:2] in ('B-', 'I-') else label!r} is not mapped")
        if name not in index:
            if iob and label[:2] in ("B-", "I-"):
                raise LabelMapError(f"entity type {label[2:]!r} maps to {name[2:]!r}, not one of the route's types "
                                    f"{entity_types(target)}")
            raise LabelMapError(f"label {label!r} maps to {name!r}, not one of the route's labels {list(target)}")
        matrix[i, index[name]] = 1.0
    return matrix


def combine_scores(parts: Sequence[tuple[float, dict[str, float]]], mappings: Sequence[np.ndarray],
                   sources: Sequence[Sequence[str]], target: Sequence[str]) -> dict:
    """One text's classification from several experts.

    Args:
        parts: per expert, its weight and its ``scores`` (label -> probability).
        mappings: per expert, :func:`mapping_matrix` of its labels onto ``target``.
        sources: per expert, its labels in the matrix's row order.
        target: the route's labels.

    Returns:
        ``{"label", "score", "scores"}`` over ``target``.
    """
    total = sum(w for w, _ in parts) or 1.0
    mixed = np.zeros(len(target), dtype=np.float64)
    for (weight, scores), matrix, labels in zip(parts, mappings, sources):
        mixed += (weight / total) * (np.array([scores[label] for label in labels], dtype=np.float64) @ matrix)
    best = int(mixed.argmax())
    return {"label": target[best], "score": round(float(mixed[best]), 6),
            "scores": {label: round(float(p), 6) for label, p in zip(target, mixed)}}


def combine_words(parts: Sequence[tuple[float, Sequence[tuple[int, int]], np.ndarray]],
                  mappings: Sequence[np.ndarray], num_target: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """One text's word-label probabilities from several experts.

    Args:
        parts: per expert, its weight, its words' char spans and their probabilities
            ``[num_words, num_source_labels]``.
        mappings: per expert, :func:`mapping_matrix` onto the route's IOB2 tags.
        num_target: how many route tags.

    Returns:
        The words' spans (by start offset, text order; a word's end is the widest any expert saw)
        and their mixed probabilities ``[num_words, num_target]``.
    """
    sums: dict[int, np.ndarray] = {}
    weights: dict[int, float] = {}
    ends: dict[int, int] = {}
    for (weight, spans, probs), matrix in zip(parts, mappings):
        mapped = probs.astype(np.float64) @ matrix if len(spans) else np.zeros((0, num_target))
        for (start, end), row in zip(spans, mapped):
            sums[start] = sums.get(start, 0.0) + weight * row
            weights[start] = weights.get(start, 0.0) + weight
            ends[start] = max(ends.get(start, end), end)
    order = sorted(sums)
    probs = np.stack([sums[s] / (weights[s] or 1.0) for s in order]) if order else np.zeros((0, num_target))
    return [(s, ends[s]) for s in order], probs

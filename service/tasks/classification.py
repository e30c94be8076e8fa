"""Sequence classification: one sequence per text (truncated, or refused when the deployment
says so), softmax over the labels."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import BaseModel, Field

from presso.core.classification import classify_logits
from presso.core.encoding import Encoded, TextEncoder
from presso.core.ensemble import combine_scores
from presso.core.manifest import Task
from presso.service.errors import LongerThanModel
from presso.service.tasks.base import TaskPlugin, routed_response_models


class ClassifyResult(BaseModel):
    label: str
    score: float
    scores: dict[str, float]
    truncated: bool = Field(description="the text was truncated to the model's max_seq_len tokens (the service "
                                        "answers 422 instead when PRESSO_CLASSIFY_LONG_TEXT=reject)")


class ClassifyResponse(ClassifyResult):
    model: str


class ClassifyBatchResponse(BaseModel):
    model: str
    results: list[ClassifyResult]


ClassifyRoutedResponse, ClassifyRoutedBatchResponse = routed_response_models(ClassifyResult, "Classify")


class SequenceClassification(TaskPlugin):
    task = Task.SEQUENCE_CLASSIFICATION
    route = "/classify"
    summary = "Label and per-label probabilities"
    result_model = ClassifyResult
    response_model = ClassifyResponse | ClassifyBatchResponse | ClassifyRoutedResponse | ClassifyRoutedBatchResponse

    def split(self, encoder: TextEncoder, texts: Sequence[str]) -> list[list[Encoded]]:
        return [[e] for e in encoder.encode(texts)]

    def check(self, sequences: list[list[Encoded]], settings, max_seq_len: int) -> None:
        """Raises: LongerThanModel: a truncated text when ``settings.classify_long_text == "reject"``."""
        if settings.classify_long_text != "reject":
            return
        for i, (encoded,) in enumerate(sequences):
            if encoded.truncated:
                raise LongerThanModel(f"text is longer than the model's {max_seq_len} tokens and this service "
                                      "refuses to truncate", f"texts.{i}")

    def decode(self, logits: np.ndarray, encoded: Encoded, labels: Sequence[str]) -> dict:
        return {**classify_logits(logits, labels), "truncated": encoded.truncated}

    def assemble(self, text: str, partials: list, labels: Sequence[str], constrained: bool) -> dict:
        return partials[0]

    def assemble_with_confidence(self, text: str, partials: list, labels: Sequence[str],
                                 constrained: bool) -> tuple[dict, float]:
        """Confidence: the top label's probability."""
        return partials[0], partials[0]["score"]

    def combine(self, text: str, parts: list, labels: Sequence[str]) -> tuple[dict, float]:
        """The experts' label probabilities, mapped and averaged; ``truncated`` if any expert truncated."""
        mixed = combine_scores([(w, p[0]["scores"]) for w, p, _, _ in parts], [m for _, _, m, _ in parts],
                               [src for _, _, _, src in parts], labels)
        result = {**mixed, "truncated": any(p[0]["truncated"] for _, p, _, _ in parts)}
        return result, result["score"]

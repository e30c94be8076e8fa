"""Token classification (NER): long texts run as overlapping windows, words are decoded jointly
with IOB2 constraints, entity spans carry exact character offsets into the input."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import BaseModel, Field

from presso.core.encoding import Encoded, TextEncoder
from presso.core.manifest import Task
from presso.core.ensemble import combine_words
from presso.core.spans import WindowWord, decode_words, group_entities, merge_windows, merged_probs, window_words
from presso.service.tasks.base import TaskPlugin, routed_response_models


class Entity(BaseModel):
    label: str = Field(description="entity type without the B-/I- prefix, e.g. PER")
    text: str = Field(description="exactly input[start:end]")
    start: int = Field(description="code-point offset of the first character")
    end: int = Field(description="code-point offset after the last character (exclusive)")
    score: float = Field(description="mean probability of the entity's word labels")


class NerResult(BaseModel):
    entities: list[Entity]
    windows: int = Field(description="sequences the text ran as: 1, or overlapping windows when it is longer "
                                     "than the model's max_seq_len tokens (entities merged, none missing)")


class NerResponse(NerResult):
    model: str


class NerBatchResponse(BaseModel):
    model: str
    results: list[NerResult]


NerRoutedResponse, NerRoutedBatchResponse = routed_response_models(NerResult, "Ner")


class TokenClassification(TaskPlugin):
    task = Task.TOKEN_CLASSIFICATION
    route = "/ner"
    summary = "Named entities with character offsets"
    result_model = NerResult
    response_model = NerResponse | NerBatchResponse | NerRoutedResponse | NerRoutedBatchResponse

    def split(self, encoder: TextEncoder, texts: Sequence[str]) -> list[list[Encoded]]:
        return encoder.encode_windows(texts)

    def decode(self, logits: np.ndarray, encoded: Encoded, labels: Sequence[str]) -> list[WindowWord]:
        return window_words(logits, encoded.word_ids, encoded.offsets, labels)

    def assemble(self, text: str, partials: list, labels: Sequence[str], constrained: bool) -> dict:
        return self.assemble_with_confidence(text, partials, labels, constrained)[0]

    def assemble_with_confidence(self, text: str, partials: list, labels: Sequence[str],
                                 constrained: bool) -> tuple[dict, float]:
        """Confidence: the lowest probability of a word's decoded label among the text's words (one
        doubtful word makes the whole text doubtful); 1.0 for a text without words."""
        words = merge_windows(partials, labels if constrained else None)
        spans = group_entities(words, text)
        confidence = min((w.score for w in words), default=1.0)
        return {"entities": [s.as_dict() for s in spans], "windows": len(partials)}, float(confidence)

    def combine(self, text: str, parts: list, labels: Sequence[str]) -> tuple[dict, float]:
        """Each word's label probabilities from every expert that saw it, mapped and averaged, then
        decoded jointly (IOB2 Viterbi) over the route's tags."""
        mixed = [(w, *merged_probs(p, len(src))) for w, p, _, src in parts]
        spans, probs = combine_words(mixed, [m for _, _, m, _ in parts], len(labels))
        words = decode_words(probs, spans, labels)
        confidence = min((w.score for w in words), default=1.0)
        return {"entities": [s.as_dict() for s in group_entities(words, text)],
                "windows": max(len(p) for _, p, _, _ in parts)}, float(confidence)

"""What a task plug-in provides: how its texts become sequences, how one sequence's logits become
a partial result, how a text's partials become its answer, and its route and response schema.
Pure functions of arrays and strings: testable without a server or a model."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
from pydantic import BaseModel, Field, create_model

from presso.core.encoding import Encoded, TextEncoder
from presso.core.manifest import Task


class TaskPlugin:
    """One task: subclass it and add an instance to :data:`presso.service.tasks.TASKS`."""

    task: ClassVar[Task]
    route: ClassVar[str]  # e.g. "/ner"
    summary: ClassVar[str]
    result_model: ClassVar[type[BaseModel]]  # one text's fields
    response_model: ClassVar[Any]  # single-text | batch response schema (OpenAPI)

    def split(self, encoder: TextEncoder, texts: Sequence[str]) -> list[list[Encoded]]:
        """The sequences of each text (one, or several windows)."""
        raise NotImplementedError

    def check(self, sequences: list[list[Encoded]], settings, max_seq_len: int) -> None:
        """Refuse texts this deployment will not serve (raise a :mod:`presso.service.errors` error)."""

    def decode(self, logits: np.ndarray, encoded: Encoded, labels: Sequence[str]) -> Any:
        """One sequence's partial result from its logits (``[seq_len, num_labels]`` or ``[num_labels]``)."""
        raise NotImplementedError

    def assemble(self, text: str, partials: list, labels: Sequence[str], constrained: bool) -> dict:
        """One text's response fields from the partial results of its sequences, in order."""
        raise NotImplementedError

    def assemble_with_confidence(self, text: str, partials: list, labels: Sequence[str],
                                 constrained: bool) -> tuple[dict, float]:
        """:meth:`assemble` and the answer's confidence in [0, 1] (what a cascade compares with its
        thresholds; defined per task in :mod:`presso.service.routing`)."""
        raise NotImplementedError

    def combine(self, text: str, parts: list[tuple[float, list, np.ndarray, Sequence[str]]],
                labels: Sequence[str]) -> tuple[dict, float]:
        """One text's answer mixed from several experts (:mod:`presso.core.ensemble`), and its confidence.

        Args:
            parts: per expert, its weight, its partial results for the text, the
                :func:`~presso.core.ensemble.mapping_matrix` of its labels onto ``labels``, and its labels.
            labels: the route's labels (NER: IOB2 tags); the answer is over these.
        """
        raise NotImplementedError


class ExpertWeight(BaseModel):
    expert: str = Field(description="the router's label for this expert")
    model: str
    weight: float = Field(description="the router's probability, renormalised over the experts that ran")


def routed_response_models(result_model: type[BaseModel], prefix: str) -> tuple[type[BaseModel], type[BaseModel]]:
    """``(single, batch)`` response schemas of a request answered through a route: each text's
    fields plus the ``model`` that answered it and that answer's ``confidence``, under the route's name."""
    fields = {"model": (str, Field(description="the model that answered this text (a router route: the expert "
                                               "with the highest weight)")),
              "confidence": (float, Field(description="the answer's confidence in [0, 1] (compared with the "
                                                      "route's thresholds)")),
              "experts": (list[ExpertWeight] | None, Field(None, description="router routes: the experts that "
                                                                             "ran and their weights"))}
    routed = create_model(f"{prefix}RoutedResult", __base__=result_model, **fields)
    single = create_model(f"{prefix}RoutedResponse", __base__=routed, route=(str, Field(description="the route")))
    batch = create_model(f"{prefix}RoutedBatchResponse", route=(str, Field(description="the route")),
                         results=(list[routed], ...))
    return single, batch

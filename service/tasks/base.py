"""What a task plug-in provides: how its texts become sequences, how one sequence's logits become
a partial result, how a text's partials become its answer, and its route and response schema.
Pure functions of arrays and strings: testable without a server or a model."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
from pydantic import BaseModel

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

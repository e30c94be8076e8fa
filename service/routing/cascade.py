"""Confidence cascades over the data plane.

A text goes to the route's first (cheapest) model; it is answered there when its confidence
reaches the step's threshold, otherwise it goes on to the next model, and the last model answers
whatever reaches it. Confidence (the task plug-in's ``assemble_with_confidence``):

- classification: the top label's probability;
- NER: the lowest probability of a word's decoded label among the text's words, so one doubtful
  word escalates the whole text (1.0 for a text without words).

Each step is an ordinary :meth:`DataPlane.infer` call on the texts still open, so escalated texts
are batched by the next model's batcher with every other request; the request's deadline counts
from its arrival across all steps, and a client that leaves cancels the step in flight.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from presso.service import errors
from presso.service.dataplane import DataPlane, Disconnected
from presso.service.routing.config import CascadeRoute


@dataclass(frozen=True)
class StepOutcome:
    """What one step did: texts it answered and texts it passed on."""

    model: str
    answered: int
    escalated: int


def split_by_threshold(confidences: list[float], threshold: float | None) -> tuple[list[int], list[int]]:
    """Positions answered at a step (confidence >= ``threshold``; every one when ``threshold`` is None,
    the last step) and positions passed on, each in input order."""
    if threshold is None:
        return list(range(len(confidences))), []
    answered = [i for i, c in enumerate(confidences) if c >= threshold]
    escalated = [i for i, c in enumerate(confidences) if c < threshold]
    return answered, escalated


def renumber_field(exc: errors.ServiceError, positions: list[int]) -> errors.ServiceError:
    """An error about ``texts.<k>`` of a step's subset, renamed to the request's own index."""
    if exc.field and exc.field.startswith("texts."):
        k = exc.field.split(".", 1)[1]
        if k.isdigit() and int(k) < len(positions):
            exc.field = f"texts.{positions[int(k)]}"
    return exc


async def run_cascade(plane: DataPlane, route: CascadeRoute, texts: list[str], *, single: bool = False,
                      timeout_ms: float | None = None, arrived_at: float | None = None,
                      disconnected: Disconnected | None = None) -> tuple[list[dict], list[StepOutcome]]:
    """Each text's result (the answering step's fields plus ``model`` and ``confidence``), in input
    order, and what each step did.

    Raises:
        Any :mod:`presso.service.errors` error of a step (``texts.<i>`` fields name the request's texts).
    """
    arrived_at = time.monotonic() if arrived_at is None else arrived_at
    results: list[dict | None] = [None] * len(texts)
    open_positions = list(range(len(texts)))
    outcomes: list[StepOutcome] = []
    for step in route.steps:
        last = step is route.steps[-1]
        try:
            _, step_results = await plane.infer(route.task_enum, [texts[i] for i in open_positions],
                                                single=single, model=step.model, timeout_ms=timeout_ms,
                                                arrived_at=arrived_at, disconnected=disconnected,
                                                with_confidence=True)
        except errors.ServiceError as exc:
            raise renumber_field(exc, open_positions) from None
        answered, escalated = split_by_threshold([r["confidence"] for r in step_results],
                                                 None if last else step.threshold)
        for k in answered:
            results[open_positions[k]] = {**step_results[k], "model": step.model}
        outcomes.append(StepOutcome(step.model, len(answered), len(escalated)))
        open_positions = [open_positions[k] for k in escalated]
        if not open_positions:
            break
    return results, outcomes  # type: ignore[return-value]

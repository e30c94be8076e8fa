"""The task registry: one plug-in per task (:class:`~presso.service.tasks.base.TaskPlugin`).
Routes, OpenAPI schemas and metric labels come from here; adding a task is one module plus an
entry in :data:`TASKS`."""

from __future__ import annotations

from presso.core.manifest import Task
from presso.service.tasks.base import TaskPlugin
from presso.service.tasks.classification import SequenceClassification
from presso.service.tasks.ner import TokenClassification

TASKS: dict[Task, TaskPlugin] = {p.task: p for p in (TokenClassification(), SequenceClassification())}
ROUTES: tuple[str, ...] = tuple(p.route for p in TASKS.values())


def plugin_for(task: Task | str) -> TaskPlugin:
    """Raises: KeyError: no plug-in serves ``task``."""
    return TASKS[Task(task)]

"""The routes file (``PRESSO_ROUTES_FILE``, YAML or JSON): named routes over the loaded models.

A ``cascade`` route lists models of one task from cheapest to most accurate; every step but the
last has a confidence ``threshold`` (see :mod:`presso.service.routing.cascade`), the last answers
whatever reaches it::

    routes:
      ner-fast:
        kind: cascade
        task: ner
        default: true          # POST /ner without "model" or "route" uses it
        steps:
          - {model: ner-small, threshold: 0.9}
          - {model: ner-large}

Checked twice: the file's shape when it is read (:func:`load_routes`: unknown keys, wrong types,
thresholds outside [0, 1], a threshold on the last step), and the models it names once they are
known (:func:`check_routes`: missing, or of another task). Every problem is a one-line
:class:`RoutesError` naming the route and field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from presso.core.manifest import Task


class RoutesError(ValueError):
    """The routes file is unreadable or invalid (one line: the file, the route, the field)."""


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="a loaded model's name")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="answer here when the text's confidence "
                                    "is at least this; absent on the last step")


class CascadeRoute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["cascade"]
    task: Literal["ner", "classify"]
    default: bool = Field(False, description="the task's endpoint uses this route when a request names neither "
                          "'model' nor 'route'")
    steps: list[Step] = Field(min_length=2)
    calibration: dict | None = Field(None, description="written by `presso calibrate`: target, measured agreement "
                                     "and share answered per step")

    @model_validator(mode="after")
    def thresholds_on_all_but_last(self) -> "CascadeRoute":
        for i, step in enumerate(self.steps[:-1]):
            if step.threshold is None:
                raise ValueError(f"steps.{i} ({step.model}) needs a threshold (only the last step has none)")
        if self.steps[-1].threshold is not None:
            raise ValueError("the last step answers every text that reaches it: remove its threshold")
        names = [s.model for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"a model appears twice in steps: {names}")
        return self

    @property
    def task_enum(self) -> Task:
        return Task.from_short(self.task)


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    routes: dict[str, CascadeRoute] = Field(default_factory=dict)

    @model_validator(mode="after")
    def one_default_per_task(self) -> "RoutesFile":
        for task in ("ner", "classify"):
            defaults = sorted(n for n, r in self.routes.items() if r.task == task and r.default)
            if len(defaults) > 1:
                raise ValueError(f"several default routes for {task}: {defaults}")
        return self

    def default_for(self, task: Task) -> str | None:
        return next((n for n, r in self.routes.items() if r.default and r.task_enum == task), None)


def parse_text(text: str, path: Path) -> dict:
    """The file's mapping: JSON for ``.json``, YAML otherwise (JSON is YAML too).

    Raises:
        RoutesError: not parseable, or not a mapping.
    """
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RoutesError(f"routes file {path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                          f"{first}") from None
    if not isinstance(data, dict):
        raise RoutesError(f"routes file {path}: expected a mapping with 'routes', got {type(data).__name__}")
    return data


def load_routes(path: Path) -> RoutesFile:
    """Read and validate the routes file's shape.

    Raises:
        RoutesError: unreadable, unparseable or invalid (the first problem, with its location).
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RoutesError(f"routes file {path}: {exc.strerror or exc}") from None
    try:
        return RoutesFile.model_validate(parse_text(text, Path(path)))
    except ValidationError as exc:
        problem = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        raise RoutesError(f"routes file {path}: {where}: {problem['msg']}") from None


def check_routes(routes: RoutesFile, models: dict[str, Task], path: Path | str = "routes file") -> None:
    """Every model a route names is loaded and of the route's task.

    Raises:
        RoutesError: the first route naming a missing model or one of another task.
    """
    for name, route in routes.routes.items():
        for i, step in enumerate(route.steps):
            task = models.get(step.model)
            if task is None:
                raise RoutesError(f"routes file {path}: routes.{name}.steps.{i}.model: no model named "
                                  f"{step.model!r}; loaded: {sorted(models)}")
            if task != route.task_enum:
                raise RoutesError(f"routes file {path}: routes.{name}.steps.{i}.model: {step.model!r} is "
                                  f"{task.value}, the route is {route.task_enum.value}")

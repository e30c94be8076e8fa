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

A ``router`` route scores each text with a classification model whose labels name domains, runs
the top ``k`` domains' experts (dropping those under ``min_probability``, never the best one) and
combines their outputs weighted by the router's probabilities (:mod:`presso.core.ensemble`)::

    routes:
      ner-domains:
        kind: router
        task: ner
        router: domain                  # classification model; its labels are the experts' keys
        k: 2
        min_probability: 0.1
        labels: [PER, LOC, ORG, MISC]   # the route's entity types (classify: labels)
        experts:
          news: {model: ner}
          social: {model: ner-wnut, label_map: {person: PER, geo-loc: LOC, company: ORG, other: MISC}}

Checked twice: the file's shape when it is read (:func:`load_routes`: unknown keys, wrong types,
thresholds outside [0, 1], a threshold on the last step), and the models it names once they are
known (:func:`check_routes`: missing, or of another task). Every problem is a one-line
:class:`RoutesError` naming the route and field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from presso.core.manifest import Task


class RoutesError(ValueError):
    """The routes file is unreadable or invalid (one line: the file, the route, the field)."""


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="a loaded model's name")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="answer here when the text's confidence "
                                    "is at least this; absent on the last step")


class Route(BaseModel):
    """What every kind of route has."""

    model_config = ConfigDict(extra="forbid")

    task: Literal["ner", "classify"]
    default: bool = Field(False, description="the task's endpoint uses this route when a request names neither "
                          "'model' nor 'route'")

    @property
    def task_enum(self) -> Task:
        return Task.from_short(self.task)


class CascadeRoute(Route):
    kind: Literal["cascade"]
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


class Expert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="a loaded model's name")
    label_map: dict[str, str] | None = Field(None, description="the expert's labels (ner: entity types) -> the "
                                             "route's; absent: the expert's labels are the route's")


class RouterRoute(Route):
    kind: Literal["router"]
    router: str = Field(min_length=1, description="a classification model whose labels are the experts' keys")
    k: int = Field(1, ge=1, description="experts run per text: the router's top k")
    min_probability: float = Field(0.0, ge=0.0, le=1.0, description="drop an expert (not the top one) whose "
                                   "router probability is below this")
    labels: list[str] | None = Field(None, min_length=1, description="the route's labels (ner: entity types); "
                                     "absent: the first expert's")
    experts: dict[str, Expert] = Field(min_length=1, description="router label -> expert")

    @property
    def models(self) -> list[str]:
        return [self.router, *(e.model for e in self.experts.values())]


class RoutesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    routes: dict[str, Annotated[CascadeRoute | RouterRoute, Field(discriminator="kind")]] = Field(
        default_factory=dict)

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
        loc = list(problem["loc"])
        if len(loc) > 2 and loc[0] == "routes" and loc[2] in ("cascade", "router"):  # the union's tag
            del loc[2]
        where = ".".join(str(p) for p in loc) or "(top level)"
        raise RoutesError(f"routes file {path}: {where}: {problem['msg']}") from None


class ModelInfo(NamedTuple):
    """What the checks need of a model: its task and labels (IOB2 tags for NER)."""

    task: Task
    labels: list[str]


def check_routes(routes: RoutesFile, models: dict[str, ModelInfo], path: Path | str = "routes file") -> None:
    """Every model a route names is loaded and of the right task; a router route's experts cover
    the router's labels and their label maps land on one label set.

    Raises:
        RoutesError: the first problem, naming the route and field.
    """
    for name, route in routes.routes.items():
        where = f"routes file {path}: routes.{name}"
        if isinstance(route, RouterRoute):
            _check_router(route, models, where)
            continue
        for i, step in enumerate(route.steps):
            _check_model(models, step.model, route.task_enum, f"{where}.steps.{i}.model")


def _check_model(models: dict[str, ModelInfo], model: str, task: Task, where: str) -> ModelInfo:
    info = models.get(model)
    if info is None:
        raise RoutesError(f"{where}: no model named {model!r}; loaded: {sorted(models)}")
    if info.task != task:
        raise RoutesError(f"{where}: {model!r} is {info.task.value}, the route is {task.value}")
    return info


def route_labels(route: RouterRoute, models: dict[str, ModelInfo]) -> list[str]:
    """The route's labels: classification labels, or IOB2 tags of its entity types (NER)."""
    from presso.core.ensemble import entity_types, iob_labels

    first = models[next(iter(route.experts.values())).model].labels
    if route.task == "ner":
        return iob_labels(route.labels or entity_types(first))
    return list(route.labels or first)


def _check_router(route: RouterRoute, models: dict[str, ModelInfo], where: str) -> None:
    from presso.core.ensemble import LabelMapError, mapping_matrix

    router = _check_model(models, route.router, Task.SEQUENCE_CLASSIFICATION, f"{where}.router")
    missing = [label for label in router.labels if label not in route.experts]
    if missing:
        raise RoutesError(f"{where}.experts: the router {route.router!r} can choose {missing}, which have no "
                          f"expert; experts: {sorted(route.experts)}")
    unknown = sorted(set(route.experts) - set(router.labels))
    if unknown:
        raise RoutesError(f"{where}.experts: {unknown} are not labels of the router {route.router!r} "
                          f"({router.labels})")
    for key, expert in route.experts.items():
        _check_model(models, expert.model, route.task_enum, f"{where}.experts.{key}.model")
    target = route_labels(route, models)
    for key, expert in route.experts.items():
        try:
            mapping_matrix(models[expert.model].labels, target, expert.label_map, route.task == "ner")
        except LabelMapError as exc:
            raise RoutesError(f"{where}.experts.{key}.label_map: {expert.model}: {exc}") from None

"""The routes of one service: which route a request uses, and its answer through that route."""

from __future__ import annotations

from pathlib import Path

from presso.core.manifest import Task
from presso.service import errors
from presso.service.dataplane import DataPlane, Disconnected, shorten
from presso.service.routing.cascade import run_cascade
from presso.service.routing.config import ModelInfo, RouterRoute, RoutesFile, check_routes, load_routes
from presso.service.routing.experts import run_router


class Routing:
    """The routes of one service over its data plane.

    Args:
        plane: the data plane the routes' models are loaded in.
        routes: the parsed routes file (empty: no routes).
        path: where it came from (for messages).
    """

    def __init__(self, plane: DataPlane, routes: RoutesFile | None = None, path: Path | None = None) -> None:
        self.plane, self.routes, self.path = plane, routes or RoutesFile(), path
        for name, route in self.routes.routes.items():
            if isinstance(route, RouterRoute):
                plane.metrics.route_texts.labels(route=name, model=route.router, outcome="scored")
                for expert in route.experts.values():
                    plane.metrics.route_texts.labels(route=name, model=expert.model, outcome="routed")
                continue
            for step in route.steps:
                for outcome in ("answered", "escalated"):
                    plane.metrics.route_texts.labels(route=name, model=step.model, outcome=outcome)

    @classmethod
    def from_settings(cls, plane: DataPlane) -> "Routing":
        """From ``PRESSO_ROUTES_FILE`` (none: no routes).

        Raises:
            RoutesError: the file is unreadable or invalid.
        """
        path = plane.settings.routes_file
        return cls(plane, load_routes(path) if path else None, path)

    def check(self) -> None:
        """Every route's models are loaded and of its task (call once the models are loaded).

        Raises:
            RoutesError: the first route naming a missing model or one of another task.
        """
        check_routes(self.routes, {n: ModelInfo(m.task, list(m.labels)) for n, m in self.plane.models.items()},
                     self.path or "routes file")

    def resolve(self, task: Task, route: str | None, model: str | None) -> str | None:
        """The route a request uses: the one named, else the task's default when no model is named.

        Raises:
            UnknownRoute: no route of that name; WrongTask: the route serves another task;
            RouteAndModel: both were named.
        """
        if route is None:
            return self.routes.default_for(task) if model is None else None
        if model is not None:
            raise errors.RouteAndModel("give 'model' (one model) or 'route' (a routing policy), not both", "route")
        found = self.routes.routes.get(route)
        if found is None:
            raise errors.UnknownRoute(f"no route named {shorten(route)}; routes: {sorted(self.routes.routes)}",
                                      "route")
        if found.task_enum != task:
            raise errors.WrongTask(f"route {route!r} serves {found.task_enum.value}, this endpoint needs "
                                   f"{task.value}", "route")
        return route

    async def answer(self, name: str, texts: list[str], *, single: bool = False, timeout_ms: float | None = None,
                     arrived_at: float | None = None, disconnected: Disconnected | None = None) -> list[dict]:
        """Each text's result through route ``name`` (fields of the answering model, plus ``model``
        and ``confidence``; router routes add ``experts``), counting texts per step: answered and
        escalated (cascades), scored by the router and routed to each expert (router routes).

        Raises:
            Any :mod:`presso.service.errors` error of a step.
        """
        route = self.routes.routes[name]
        options = {"single": single, "timeout_ms": timeout_ms, "arrived_at": arrived_at, "disconnected": disconnected}
        counter = self.plane.metrics.route_texts
        if isinstance(route, RouterRoute):
            results, ran = await run_router(self.plane, route, texts, **options)
            counter.labels(route=name, model=route.router, outcome="scored").inc(len(texts))
            for o in ran:
                counter.labels(route=name, model=o.model, outcome="routed").inc(o.texts)
            return results
        results, outcomes = await run_cascade(self.plane, route, texts, **options)
        for o in outcomes:
            counter.labels(route=name, model=o.model, outcome="answered").inc(o.answered)
            counter.labels(route=name, model=o.model, outcome="escalated").inc(o.escalated)
        return results

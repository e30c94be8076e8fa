"""Import structure: no cycles between the project's modules (imports inside functions count too),
layers import only downwards, and the installed package has one top-level name.

Layers: ``presso.core`` (the artifact contract, tokenization, post-processing, runtime) is imported by
``presso.compress`` (offline pipeline) and ``presso.service`` (serving), which never import each other or
the CLI; inside the service, transport -> data plane -> scheduling -> compute."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# source folder -> installed package name
FOLDERS = {"core": "presso.core", "compress": "presso.compress", "service": "presso.service", "presso": "presso"}


def module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            name = ".".join((package, *parts))
            deps = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    deps.add(node.module)
                    deps.update(f"{node.module}.{a.name}" for a in node.names)  # from package import module
                elif isinstance(node, ast.Import):
                    deps.update(alias.name for alias in node.names)
            graph[name] = {d for d in deps if d.split(".")[0] in ("presso", *FOLDERS)}
    return graph


def test_no_import_cycles():
    graph = module_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep] if dep in stack else [node, dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_code_imports_the_installed_names_only():
    """``import service`` / ``import compress`` would only work from a source checkout."""
    bare = {m: sorted(d for d in deps if d.split(".")[0] in ("core", "compress", "service"))
            for m, deps in module_graph().items()}
    assert not {m: d for m, d in bare.items() if d}


def _offenders(importer: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    out = {m: sorted(d for d in deps if d.startswith(forbidden))
           for m, deps in module_graph().items() if m.startswith(importer)}
    return {m: d for m, d in out.items() if d}


CLI = ("presso.cli", "presso.bench", "presso.report", "presso.http_eval", "presso.calibrate")


def test_core_imports_neither_side():
    assert not _offenders("presso.core", ("presso.compress", "presso.service", *CLI))


def test_the_service_does_not_import_compression_or_the_cli():
    assert not _offenders("presso.service", ("presso.compress", *CLI))


def test_compression_does_not_import_the_service():
    assert not _offenders("presso.compress", ("presso.service", *CLI))


def test_service_layers_import_only_downwards():
    transport = ("presso.service.api", "presso.service.server", "presso.service.multiprocess")
    below_transport = ("presso.service.dataplane", "presso.service.batching", "presso.service.cores",
                       "presso.service.registry",
                       "presso.service.tasks", "presso.service.errors", "presso.service.metrics")
    for module in below_transport:
        assert not _offenders(module, transport), module
    for module in ("presso.service.batching", "presso.service.cores", "presso.service.registry",
                   "presso.service.tasks"):
        assert not _offenders(module, ("presso.service.dataplane",)), module
    assert not _offenders("presso.service.cores", ("presso.service.batching",))  # the cores know no batcher type


def test_routing_is_a_policy_between_transport_and_the_data_plane():
    """Routes (cascades) call the data plane; the data plane and everything below it never import them,
    and routing never imports the transport."""
    transport = ("presso.service.api", "presso.service.server", "presso.service.multiprocess",
                 "presso.service.inference")
    assert not _offenders("presso.service.routing", transport)
    for module in ("presso.service.dataplane", "presso.service.batching", "presso.service.cores",
                   "presso.service.registry", "presso.service.tasks", "presso.service.errors",
                   "presso.service.metrics"):
        assert not _offenders(module, ("presso.service.routing",)), module


def test_every_package_folder_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapped = {v: k for k, v in config["package-dir"].items()}
    found = set()
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
            if folder != "presso":
                assert mapped[folder] == package
    assert found == listed

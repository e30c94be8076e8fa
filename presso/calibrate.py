"""``presso calibrate ROUTE``: a cascade's thresholds from its models' answers on validation texts.

Every step's model answers every text offline (the service's own tokenization, ONNX Runtime
session, decoding and confidence: :class:`presso.service.registry.LoadedModel`), the thresholds come
from :func:`presso.service.routing.calibration.choose_thresholds`, and the routes file is rewritten
with them and a ``calibration`` record (target, measured agreement, share answered per step,
texts used). Labels are not needed: agreement is with the route's last model.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from presso.core.manifest import artifact_dirs, parse_manifest
from presso.service.routing.calibration import Calibration, answer_key, choose_thresholds
from presso.service.routing.config import (CascadeRoute, ModelInfo, RoutesError, RoutesFile, check_routes,
                                           load_routes, parse_text)

BATCH = 32


class CalibrationInputError(ValueError):
    """Unusable texts or models (one line naming the file and line, or the model)."""


def read_texts(path: Path) -> list[str]:
    """Texts of ``path``: one per line, or JSON Lines (``.jsonl``) with a ``text`` field; blank lines
    are skipped.

    Raises:
        CalibrationInputError: unreadable, a JSONL line that is not an object with a string ``text``
            (naming file and line), or no texts at all.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationInputError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    texts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if Path(path).suffix == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CalibrationInputError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise CalibrationInputError(f"{path}:{number}: expected an object with a string 'text'")
            line = row["text"]
        texts.append(line)
    if not texts:
        raise CalibrationInputError(f"{path}: no texts")
    return texts


def builtin_validation_texts(dataset: str) -> list[str]:
    """The validation split of a built-in dataset (``ner``: CoNLL-2003 sentences as their tokens
    joined by spaces, as ``presso eval`` sends them; ``sentiment``: the tweets)."""
    from presso.compress.datasets import load_builtin
    from presso.http_eval import texts_as_sent

    splits = load_builtin(dataset)
    return texts_as_sent(splits.task, splits.validation)


def results(model, texts: list[str]) -> list[tuple[dict, float]]:
    """Each text's answer (the response fields) and confidence from one loaded model, batched by
    length as the service batches (results do not depend on batch composition)."""
    windows = model.tokenize(texts)
    flat = sorted(((t, w) for t, ws in enumerate(windows) for w in range(len(ws))),
                  key=lambda tw: windows[tw[0]][tw[1]].tokens)
    partials: dict[tuple[int, int], object] = {}
    for at in range(0, len(flat), BATCH):
        chunk = flat[at: at + BATCH]
        for key, out in zip(chunk, model.infer([windows[t][w] for t, w in chunk])):
            partials[key] = out
    return [model.assemble_with_confidence(text, [partials[(t, w)] for w in range(len(windows[t]))])
            for t, text in enumerate(texts)]


def answers(model, texts: list[str]) -> tuple[list[tuple], list[float]]:
    """Each text's answer key (:func:`answer_key`) and confidence from one loaded model."""
    answered = results(model, texts)
    return [answer_key(model.task.short, r) for r, _ in answered], [c for _, c in answered]


def calibrate(route_name: str, routes_file: Path, models_dir: Path, texts: list[str], target: float,
              source: str, write: bool = True) -> Calibration:
    """Choose the route's thresholds on ``texts`` and (``write``) rewrite ``routes_file`` with them.

    Raises:
        RoutesError: the routes file is invalid, has no route ``route_name``, or names missing models.
        CalibrationInputError: a model cannot be loaded.
    """
    from presso.core.manifest import ArtifactError
    from presso.core.runtime import onnxruntime_distribution, select_providers
    from presso.service.registry import LoadedModel

    routes = load_routes(routes_file)
    route = routes.routes.get(route_name)
    if route is None:
        raise RoutesError(f"routes file {routes_file}: no route named {route_name!r}; routes: {sorted(routes.routes)}")
    folders = {parse_manifest(d).name: d for d in artifact_dirs(models_dir)}
    if not isinstance(route, CascadeRoute):
        raise RoutesError(f"routes file {routes_file}: route {route_name!r} is a {route.kind} route; only cascade "
                          f"routes have thresholds to calibrate")
    check_routes(RoutesFile(routes={route_name: route}),
                 {n: ModelInfo(m.task, list(m.labels)) for n, m in ((n, parse_manifest(d)) for n, d in folders.items())},
                 routes_file)
    providers = select_providers(onnxruntime_distribution())
    per_step = []
    for step in route.steps:
        try:
            model = LoadedModel(folders[step.model], providers, intra_op_threads=0)
        except ArtifactError as exc:
            raise CalibrationInputError(f"model {step.model}: {exc}") from None
        per_step.append(answers(model, texts))
    last_keys = per_step[-1][0]
    result = choose_thresholds([conf for _, conf in per_step[:-1]],
                               [[k == ref for k, ref in zip(keys, last_keys)] for keys, _ in per_step[:-1]],
                               target)
    if write:
        write_thresholds(routes_file, route_name, result, source)
    return result


def write_thresholds(routes_file: Path, route_name: str, result: Calibration, source: str) -> None:
    """Rewrite the routes file (same format; YAML comments are not kept) with the route's new
    thresholds and its ``calibration`` record, validated before it replaces the old file."""
    path = Path(routes_file)
    data = parse_text(path.read_text(), path)
    route = data["routes"][route_name]
    for step, threshold in zip(route["steps"], result.thresholds):
        step["threshold"] = round(threshold, 6)
    route["calibration"] = {
        "target_agreement": result.target, "agreement": result.agreement, "examples": result.examples,
        "texts": source, "share_answered": {s["model"]: share for s, share in zip(route["steps"], result.shares)},
        "calibrated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    RoutesFile.model_validate(data)
    if path.suffix == ".json":
        text = json.dumps(data, indent=2) + "\n"
    else:
        import yaml

        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

"""Domain experts behind a top-k router, over the data plane.

The route's router (a classification model whose labels name the experts) scores every text; each
text runs on its top ``k`` experts (an expert under ``min_probability`` is dropped unless it is the
top one), with weights = the router's probabilities renormalised over the experts kept. Every
expert gets its texts in one ordinary :meth:`DataPlane.infer` call, all experts side by side, so
they are batched with other traffic like any request; the deadline counts from arrival across the
router and the experts. A text with one expert gets that expert's answer: exactly, without a label
map; for NER with one, its own decoded entity spans with their types renamed by the map (decoding
after adding up the probabilities of types mapped together, e.g. WNUT's product, movie and tvshow
into MISC, finds entities the expert itself does not: on the tweet test split the routed model's
entity F1 was 0.527 that way, 0.553 this way, with the tweet expert alone at 0.579). Otherwise the
experts' outputs are mixed over the route's labels (:meth:`TaskPlugin.combine`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from presso.core.ensemble import LabelMapError, mapping_matrix
from presso.core.manifest import Task
from presso.service import errors
from presso.service.dataplane import DataPlane, Disconnected
from presso.service.routing.cascade import renumber_field
from presso.service.routing.config import ModelInfo, RouterRoute, route_labels


def top_experts(scores: dict[str, float], k: int, min_probability: float = 0.0) -> list[tuple[str, float]]:
    """The ``k`` most probable router labels with weights summing to 1 (ties broken by label
    order); labels under ``min_probability`` are dropped, except the most probable one."""
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])[:k]
    kept = [ranked[0], *(kv for kv in ranked[1:] if kv[1] >= min_probability)]
    total = sum(p for _, p in kept)
    return [(label, (p / total) if total > 0 else 1.0 / len(kept)) for label, p in kept]


@dataclass(frozen=True)
class ExpertOutcome:
    model: str
    texts: int


async def run_router(plane: DataPlane, route: RouterRoute, texts: list[str], *, single: bool = False,
                     timeout_ms: float | None = None, arrived_at: float | None = None,
                     disconnected: Disconnected | None = None) -> tuple[list[dict], list[ExpertOutcome]]:
    """Each text's result (over the route's labels) with ``model`` (its top expert), ``confidence``
    and ``experts`` (who ran, with weights), in input order; and how many texts each expert ran.

    Raises:
        Any :mod:`presso.service.errors` error of the router or an expert (``texts.<i>`` fields
        name the request's texts).
    """
    common = {"single": single, "timeout_ms": timeout_ms, "arrived_at": arrived_at, "disconnected": disconnected}
    _, scored = await plane.infer(Task.SEQUENCE_CLASSIFICATION, texts, model=route.router, **common)
    chosen = [top_experts(r["scores"], route.k, route.min_probability) for r in scored]
    positions: dict[str, list[int]] = {}
    for i, experts in enumerate(chosen):
        for key, _ in experts:
            positions.setdefault(key, []).append(i)

    async def run(key: str):
        try:
            return await plane.infer(route.task_enum, [texts[i] for i in positions[key]],
                                     model=route.experts[key].model, partials=True, **common)
        except errors.ServiceError as exc:
            raise renumber_field(exc, positions[key]) from None

    keys = list(positions)
    ran = dict(zip(keys, await asyncio.gather(*(run(key) for key in keys))))
    infos = {name: ModelInfo(m.task, list(m.labels)) for name, m in plane.models.items()}
    labels = route_labels(route, infos)
    ner = route.task == "ner"
    try:
        matrices = {key: mapping_matrix(loaded.labels, labels, route.experts[key].label_map, ner)
                    for key, (loaded, _) in ran.items()}
    except LabelMapError as exc:  # checked at startup; only a reload with other labels gets here
        raise errors.ModelReplaced(f"an expert was reloaded with labels its route's label map does not cover "
                                   f"({exc}); fix the routes file and restart") from None
    at = {key: {text: k for k, text in enumerate(positions[key])} for key in keys}
    results = []
    for i, (text, experts) in enumerate(zip(texts, chosen)):
        top_key = experts[0][0]
        top_model, _ = ran[top_key]
        label_map = route.experts[top_key].label_map
        if len(experts) == 1 and (ner or (label_map is None and list(top_model.labels) == labels)):
            result, confidence = top_model.assemble_with_confidence(text, ran[top_key][1][at[top_key][i]])
            if ner and label_map:
                result = {**result, "entities": [{**e, "label": label_map.get(e["label"], e["label"])}
                                                 for e in result["entities"]]}
        else:
            parts = [(w, ran[key][1][at[key][i]], matrices[key], list(ran[key][0].labels)) for key, w in experts]
            result, confidence = top_model.plugin.combine(text, parts, labels)
        results.append({**result, "model": route.experts[top_key].model, "confidence": confidence,
                        "experts": [{"expert": key, "model": route.experts[key].model, "weight": round(w, 6)}
                                    for key, w in experts]})
    return results, [ExpertOutcome(route.experts[key].model, len(positions[key])) for key in keys]

"""``presso bench experts``: domain experts behind a top-k router, on news (CoNLL-2003) and tweets
(WNUT-16), over HTTP.

Models (built beforehand, e.g. by ``make bench-experts``): the news expert (``presso build ner``),
the tweet expert (``presso build wnut``, WNUT's ten entity types), one model on the union of both
corpora (``presso build news-tweets``, tweet types mapped onto CoNLL's) and the router
(``presso build domains``: news vs social). One server holds them all, with router routes for
``k`` = 1 and 2; the tweet expert's answers are mapped onto CoNLL's four types by the route (and,
when it runs alone, by this benchmark with the same map) so every configuration is scored on the
same labels.

Test sets: each domain's whole test split, and a mixed set of every tweet test sentence plus as
many news test sentences (a seeded sample). Configurations: each expert alone, the union model,
routed with k=1 and k=2, and oracle routing (each text to its own domain's expert).

Writes ``reports/experts.json`` (``summary``: ``router_beats_single_experts_on_mixed`` and the
per-domain gaps to each domain's own expert) and ``reports/experts.md``.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from presso.bench.provenance import model_versions
from presso.bench.routes import serve_with_routes
from presso.bench.serve import cpu_name, stop_server
from presso.http_eval import post_all, spans_to_tags

NEWS, SOCIAL = "news", "social"


def routes_document(news: str, tweets: str, router: str, type_map: dict[str, str], types: list[str]) -> dict:
    experts = {NEWS: {"model": news}, SOCIAL: {"model": tweets, "label_map": type_map}}
    return {"routes": {f"experts-k{k}": {"kind": "router", "task": "ner", "router": router, "k": k,
                                        "labels": types, "experts": experts} for k in (1, 2)}}


def test_sets(seed: int = 13) -> dict[str, list[tuple[str, object]]]:
    """``{"news": [...], "social": [...], "mixed": [...]}`` of ``(domain, NerExample)``, tweet tags
    mapped onto CoNLL's types."""
    from presso.compress.datasets import WNUT_TO_CONLL, load_conll2003, load_wnut16, map_types

    news = [(NEWS, ex) for ex in load_conll2003().test]
    social = [(SOCIAL, ex) for ex in map_types(load_wnut16(seed).test, WNUT_TO_CONLL)]
    mixed = social + random.Random(seed).sample(news, len(social))
    return {NEWS: news, SOCIAL: social, "mixed": mixed}


def predicted_tags(examples: list[tuple[str, object]], results: list[dict],
                   type_map: dict[str, str] | None = None) -> list[list[str]]:
    """Each example's IOB2 tags from the answer's entities, labels renamed by ``type_map``."""
    def entities(r):
        return [{**e, "label": (type_map or {}).get(e["label"], e["label"])} for e in r["entities"]]

    return [spans_to_tags(ex.tokens, entities(r)) for (_, ex), r in zip(examples, results)]


def score(examples: list[tuple[str, object]], preds: list[list[str]]) -> dict:
    from presso.compress.metrics import ner_metrics

    return ner_metrics([ex.tags for _, ex in examples], preds)


def gap_intervals(sets: dict[str, list], preds: dict[str, dict[str, list]]) -> dict:
    """Per domain, routed (k=1, k=2) minus the domain's own expert with a 95% paired bootstrap
    interval (:func:`presso.compress.metrics.paired_f1_gap_interval`)."""
    from presso.compress.metrics import paired_f1_gap_interval

    own = {NEWS: "news_expert", SOCIAL: "tweet_expert"}
    return {d: {f"routed_k{k}": paired_f1_gap_interval([ex.tags for _, ex in sets[d]], preds[d][f"routed_k{k}"],
                                                       preds[d][own[d]]) for k in (1, 2)}
            for d in (NEWS, SOCIAL)}


def run(models_dir: Path, out_dir: Path, news: str = "ner", tweets: str = "wnut", union: str = "news-tweets",
        router: str = "domains", batch: int = 16, concurrency: int = 4) -> dict:
    """Serve, measure every configuration on every test set, write ``experts.json`` and ``experts.md``."""
    from presso.compress.datasets import WNUT_TO_CONLL
    from presso.core.ensemble import entity_types
    from presso.core.manifest import artifact_dirs, parse_manifest

    manifests = {m.name: m for m in map(parse_manifest, artifact_dirs(models_dir))}
    missing = [n for n in (news, tweets, router) if n not in manifests]
    if missing:
        raise ValueError(f"no artifacts named {missing} under {models_dir} (see make bench-experts)")
    types = entity_types(manifests[news].labels)
    work = Path(tempfile.mkdtemp(prefix="presso-bench-experts-"))
    routes_file = work / "routes.json"
    routes_file.write_text(json.dumps(routes_document(news, tweets, router, WNUT_TO_CONLL, types)))
    sets = test_sets()
    proc, url = serve_with_routes(models_dir, routes_file, work / "server.log")
    rows: dict[str, dict] = {}
    preds: dict[str, dict[str, list]] = {}
    try:
        for set_name, examples in sets.items():
            texts = [" ".join(ex.tokens) for _, ex in examples]

            def post(model=None, route=None):
                return asyncio.run(post_all(url, "/ner", model, texts, batch, concurrency, route=route))

            started = time.perf_counter()
            out: dict = {}
            tags = preds[set_name] = {"news_expert": predicted_tags(examples, post(model=news)),
                                      "tweet_expert": predicted_tags(examples, post(model=tweets), WNUT_TO_CONLL)}
            if union in manifests:  # optional: the longest build of the four
                tags["union"] = predicted_tags(examples, post(model=union))
            for k in (1, 2):
                results = post(route=f"experts-k{k}")
                tags[f"routed_k{k}"] = predicted_tags(examples, results)
                if k == 1:
                    chosen = [r["experts"][0]["expert"] for r in results]
                    out["router_accuracy"] = round(sum(c == d for c, (d, _) in zip(chosen, examples)) / len(examples), 4)
            oracle: list[list[str]] = [[] for _ in examples]
            for domain, model, type_map in ((NEWS, news, None), (SOCIAL, tweets, WNUT_TO_CONLL)):
                at = [i for i, (d, _) in enumerate(examples) if d == domain]
                if at:
                    got = asyncio.run(post_all(url, "/ner", model, [texts[i] for i in at], batch, concurrency))
                    for i, t in zip(at, predicted_tags([examples[i] for i in at], got, type_map)):
                        oracle[i] = t
            tags["oracle"] = oracle
            out.update({config: score(examples, t) for config, t in tags.items()})
            out["examples"] = len(examples)
            out["seconds"] = round(time.perf_counter() - started, 1)
            rows[set_name] = out
    finally:
        stop_server(proc)
    report = {"cpu": cpu_name(), "models": model_versions(models_dir), "types": types,
              "tweet_type_map": WNUT_TO_CONLL, "routes": json.loads(routes_file.read_text()),
              "test_sets": {name: {"examples": len(ex), "domains": {d: sum(1 for x, _ in ex if x == d)
                                                                    for d in (NEWS, SOCIAL)}}
                            for name, ex in sets.items()},
              "results": rows, "summary": summarize(rows, gap_intervals(sets, preds))}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "experts.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "experts.md").write_text(table(report))
    return report


CONFIGS = ("news_expert", "tweet_expert", "union", "routed_k1", "routed_k2", "oracle")


def summarize(rows: dict[str, dict], intervals: dict | None = None) -> dict:
    """The issue's figures: on the mixed set, does routing beat both experts and the union (when
    it was built: ``union_measured``); on each domain, routed minus that domain's own expert
    (points, entity F1), with ``intervals`` (:func:`gap_intervals`) where given."""
    f1 = {s: {c: float(rows[s][c]["f1"]) for c in CONFIGS if c in rows[s]} for s in rows}
    mixed = f1["mixed"]
    best_single = max(mixed["news_expert"], mixed["tweet_expert"], mixed.get("union", 0.0))
    own = {NEWS: "news_expert", SOCIAL: "tweet_expert"}
    per_domain = {d: {**f1[d],
                      **{f"routed_k{k}_minus_own_expert_points": round(100 * (f1[d][f"routed_k{k}"] - f1[d][own[d]]), 2)
                         for k in (1, 2)}} for d in (NEWS, SOCIAL)}
    return {"mixed": mixed, "per_domain": per_domain, "union_measured": "union" in mixed,
            "router_beats_single_experts_on_mixed": bool(max(mixed["routed_k1"], mixed["routed_k2"]) > best_single),
            "router_k1_beats_single_experts_on_mixed": bool(mixed["routed_k1"] > best_single),
            "within_0.5_points_of_own_expert": {d: bool(max(per_domain[d]["routed_k1_minus_own_expert_points"],
                                                       per_domain[d]["routed_k2_minus_own_expert_points"]) >= -0.5)
                                                for d in (NEWS, SOCIAL)},
            "router_accuracy_mixed": rows["mixed"]["router_accuracy"],
            **({"gap_to_own_expert_95ci": intervals} if intervals else {})}


def table(report: dict) -> str:
    rows = report["results"]
    lines = ["| test set | " + " | ".join(CONFIGS) + " | router accuracy |",
             "|---|" + "---|" * (len(CONFIGS) + 1)]
    for name, out in rows.items():
        lines.append(f"| {name} ({out['examples']}) | " + " | ".join(f"{out[c]['f1']:.4f}" if c in out else "not built"
                                                                    for c in CONFIGS)
                     + f" | {out['router_accuracy']:.4f} |")
    intervals = report["summary"].get("gap_to_own_expert_95ci")
    if intervals:
        lines += ["", "| domain | routed minus own expert, points (95% paired bootstrap interval) |", "|---|---|"]
        lines += [f"| {d} | " + "; ".join(f"{k.replace('routed_', '')}: {g['gap_points']:+.2f} "
                                           f"[{g['low_points']:+.2f}, {g['high_points']:+.2f}]" for k, g in by_k.items())
                  + " |" for d, by_k in intervals.items()]
    return "\n".join(lines) + "\n"

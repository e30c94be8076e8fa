"""``presso bench cascade-bound``: the most a confidence cascade of given models can gain, offline.

Every step's model answers every validation and test text once (the service's tokenization,
ONNX Runtime session, decoding and confidence: :func:`presso.calibrate.results`), each answer is
scored against the gold labels, and each model's cost per token is measured in the same run (one
ONNX Runtime thread, batches of :data:`SPEED_BATCH` windows sorted by length, best of two passes).
A sweep of thresholds then gives, for every combination, the cascade's metric on both splits and
its *bound*: the last model's cost of the texts over the cascade's (each step pays for the tokens
that reach it), the speedup a server would get with no scheduling or HTTP loss.

Per-text scoring: NER contributes ``2 x true positives`` over ``predicted + gold entities``
(summed, that is seqeval's micro entity F1); classification ``1`` over ``1`` when the label is right.

Writes ``reports/<name>.json``: ``steps`` (metric alone, cost per token), ``sweep`` and a ``summary``:
the thresholds ``presso calibrate`` chooses at 98.5% and 99.5% agreement with the last model
(validation, no labels), and the best bound whose gap to the last model stays within
``max_gap_points`` on validation (a threshold a user could choose with labels) and on test (chosen
after the fact: an upper bound, not a result).
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99)
SPEED_BATCH = 16
SPEED_TEXTS = 1600
AGREEMENT_TARGETS = (0.985, 0.995)


def text_scores(task: str, examples: list, answers: list[dict]) -> list[tuple[int, int]]:
    """Per text ``(numerator, denominator)`` of the split's metric (see the module docstring)."""
    if task != "ner":
        return [(int(a["label"] == ex.label), 1) for ex, a in zip(examples, answers)]
    from seqeval.metrics.sequence_labeling import get_entities

    from presso.http_eval import spans_to_tags

    out = []
    for ex, a in zip(examples, answers):
        pred = set(get_entities(spans_to_tags(ex.tokens, a["entities"])))
        gold = set(get_entities(list(ex.tags)))
        out.append((2 * len(pred & gold), len(pred) + len(gold)))
    return out


def metric(scores: list[tuple[int, int]]) -> float:
    """The split's metric from per-text scores, in points (0-100)."""
    den = sum(b for _, b in scores)
    return 100.0 * sum(a for a, _ in scores) / den if den else 0.0


def evaluate(steps: list[dict], combo: tuple[float, ...] | list[float]) -> dict:
    """One combination of thresholds for the thresholded steps (all but the last).

    Args:
        steps: per step, ``{"cost_per_token": float, split: {"scores": [(num, den)], "confidence": [float],
            "tokens": [int]}}`` for ``validation`` and ``test``, texts in the same order for every step.

    Returns:
        ``thresholds``, per split the metric gap to the last model alone (``<split>_gap_points``),
        ``test_share_tokens`` (share of the tokens, as the last model counts them, reaching each
        step) and ``test_bound`` (the last model's cost of every text over the cascade's, each
        step's cost counted in its own tokens; test split).
    """
    last = steps[-1]
    row: dict = {"thresholds": [round(float(t), 6) for t in combo]}
    for split in ("validation", "test"):
        answered, cost, reaching = [], 0.0, [0] * len(steps)
        for t in range(len(last[split]["scores"])):
            for i, step in enumerate(steps):
                reaching[i] += last[split]["tokens"][t]
                cost += step["cost_per_token"] * step[split]["tokens"][t]
                if i == len(steps) - 1 or step[split]["confidence"][t] >= combo[i]:
                    answered.append(step[split]["scores"][t])
                    break
        row[f"{split}_gap_points"] = round(metric(last[split]["scores"]) - metric(answered), 3)
        if split == "test":
            row["test_share_tokens"] = [round(r / reaching[0], 4) for r in reaching]
            row["test_bound"] = round(last["cost_per_token"] * sum(last[split]["tokens"]) / cost, 3)
    return row


def sweep(steps: list[dict], thresholds: tuple[float, ...] = GRID) -> list[dict]:
    """:func:`evaluate` for every combination of ``thresholds`` over the thresholded steps."""
    return [evaluate(steps, combo) for combo in itertools.product(thresholds, repeat=len(steps) - 1)]


def best(rows: list[dict], split: str, max_gap_points: float) -> dict | None:
    """The row of highest ``test_bound`` whose gap on ``split`` is at most ``max_gap_points``."""
    fitting = [r for r in rows if r[f"{split}_gap_points"] <= max_gap_points]
    return max(fitting, key=lambda r: r["test_bound"]) if fitting else None


def cost_per_token(model, texts: list[str]) -> float:
    """Seconds of :meth:`LoadedModel.infer` per token (padding included) on ``texts``."""
    items = sorted((w for ws in model.tokenize(texts) for w in ws), key=lambda w: w.tokens)
    batches = [items[i: i + SPEED_BATCH] for i in range(0, len(items), SPEED_BATCH)]
    passes = []
    for _ in range(2):
        started = time.perf_counter()
        for b in batches:
            model.infer(b)
        passes.append(time.perf_counter() - started)
    return min(passes) / sum(w.tokens for w in items)


def run(dataset: str, paths: list[Path], out_dir: Path, max_gap_points: float = 0.2,
        report_name: str = "cascade-bound", limit: int | None = None) -> dict:
    """Answer, score and time every step (``paths``: artifact folders, cheapest first), sweep the
    thresholds and write ``<out_dir>/<report_name>.json`` (``limit``: the first N texts of each split).

    Raises:
        ArtifactError: an artifact cannot be loaded.
        ValueError: fewer than two steps, the same folder twice, a model of another task or label
            set than the dataset's, a report name with folders in it, or an ``out_dir`` that cannot
            be created or written (all checked before any work).
    """
    if len(paths) < 2:
        raise ValueError("a cascade needs at least two models")
    if not report_name or Path(report_name).name != report_name or report_name in (".", ".."):
        raise ValueError(f"report name {report_name!r}: a plain file name without folders")
    resolved = [Path(p).resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise ValueError("the same model is given twice; each step is a different artifact folder")
    try:  # before the work: an unusable output folder fails now, not after every model ran
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".{report_name}.json.tmp"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"output folder {out_dir}: {exc.strerror or exc}") from None
    from presso.bench.serve import cpu_name
    from presso.calibrate import results
    from presso.service.routing.calibration import answer_key, choose_thresholds
    from presso.compress.datasets import load_builtin
    from presso.http_eval import texts_as_sent
    from presso.core.runtime import onnxruntime_distribution, select_providers
    from presso.service.registry import LoadedModel

    splits = load_builtin(dataset)
    examples = {s: getattr(splits, s)[:limit] for s in ("validation", "test")}
    texts = {s: texts_as_sent(splits.task, examples[s]) for s in examples}
    providers = select_providers(onnxruntime_distribution())
    models = [LoadedModel(Path(path), providers, intra_op_threads=1) for path in paths]  # every step checked first
    for path, model in zip(paths, models):
        if model.task.short != ("ner" if splits.task == "ner" else "classify"):
            raise ValueError(f"{path}: a {model.task.short} model, but {dataset} is a {splits.task} dataset")
        if sorted(model.labels) != sorted(splits.labels):
            raise ValueError(f"{path}: labels {sorted(model.labels)} differ from the {dataset} dataset's "
                             f"{sorted(splits.labels)}")
    steps = []
    for path, model in zip(paths, models):
        step: dict = {"name": model.name, "version": model.version, "path": str(path),
                      "cost_per_token": cost_per_token(model, texts["test"][:SPEED_TEXTS])}
        for split in ("validation", "test"):
            answered = results(model, texts[split])
            if split == "validation":
                step["keys"] = [answer_key(model.task.short, a) for a, _ in answered]
            step[split] = {"scores": text_scores(splits.task, examples[split], [a for a, _ in answered]),
                           "confidence": [c for _, c in answered],
                           "tokens": [sum(w.tokens for w in ws) for ws in model.tokenize(texts[split])]}
        steps.append(step)
    rows = sweep(steps)
    calibrated = {}
    for target in AGREEMENT_TARGETS:  # what `presso calibrate` would choose (no labels needed)
        chosen = choose_thresholds([s["validation"]["confidence"] for s in steps[:-1]],
                                   [[k == ref for k, ref in zip(s["keys"], steps[-1]["keys"])] for s in steps[:-1]],
                                   target)
        calibrated[f"{target:g}"] = evaluate(steps, chosen.thresholds)
    last = steps[-1]["cost_per_token"]
    report = {
        "dataset": splits.dataset, "task": splits.task, "cpu": cpu_name(), "grid": list(GRID),
        "steps": [{"name": s["name"], "version": s["version"], "path": s["path"],
                   "validation_metric": round(metric(s["validation"]["scores"]), 2),
                   "test_metric": round(metric(s["test"]["scores"]), 2),
                   "cost_per_token_us": round(s["cost_per_token"] * 1e6, 2),
                   "speedup_vs_last": round(last / s["cost_per_token"], 2)} for s in steps],
        "sweep": rows,
        "summary": {"max_gap_points": max_gap_points, "calibrated_to_agreement": calibrated,
                    "chosen_on_validation": best(rows, "validation", max_gap_points),
                    "best_on_test_after_the_fact": best(rows, "test", max_gap_points)},
    }
    (out_dir / f"{report_name}.json").write_text(json.dumps(report, indent=1) + "\n")
    return report

"""Score a running Presso service over HTTP on a built-in test split.

NER: each CoNLL-2003 test sentence is sent as its tokens joined by single spaces; returned entity
spans are mapped back to tokens (the first token an entity overlaps gets ``B-``, the rest ``I-``)
and scored with seqeval, so the figure includes every serving step: tokenization, batching, span
aggregation and character offsets.
"""

from __future__ import annotations

import asyncio
import time

import httpx


def token_starts(tokens: list[str]) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for tok in tokens:
        spans.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    return spans


def spans_to_tags(tokens: list[str], entities: list[dict]) -> list[str]:
    """IOB2 tags of ``tokens`` (joined by single spaces) from entity char spans."""
    spans = token_starts(tokens)
    tags = ["O"] * len(tokens)
    for ent in entities:
        inside = [i for i, (s, e) in enumerate(spans) if s < ent["end"] and e > ent["start"]]
        for k, i in enumerate(inside):
            if tags[i] == "O":
                tags[i] = ("B-" if k == 0 else "I-") + ent["label"]
    return tags


async def post_all(url: str, endpoint: str, model: str | None, texts: list[str], batch: int,
                   concurrency: int, route: str | None = None) -> list[dict]:
    """Every text's result, sent ``batch`` texts per request with ``concurrency`` requests in flight,
    to one ``model`` or through one ``route`` (neither: the endpoint's default)."""
    results: list[dict | None] = [None] * len(texts)
    gate = asyncio.Semaphore(concurrency)

    async def send(client: httpx.AsyncClient, start: int) -> None:
        chunk = texts[start: start + batch]
        body = {"texts": chunk, **({"model": model} if model else {}), **({"route": route} if route else {})}
        async with gate:
            resp = await client.post(f"{url}{endpoint}", json=body)
        resp.raise_for_status()
        for k, r in enumerate(resp.json()["results"]):
            results[start + k] = r

    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(send(client, s) for s in range(0, len(texts), batch)))
    return results  # type: ignore[return-value]


def texts_as_sent(task: str, examples: list) -> list[str]:
    """The request text of each example: a NER sentence's tokens joined by single spaces (what
    :func:`spans_to_tags` maps back), a classification example's text."""
    return [" ".join(ex.tokens) for ex in examples] if task == "ner" else [ex.text for ex in examples]


def test_split(dataset: str, limit: int | None = None):
    """``(splits, test examples, texts as sent, endpoint)`` of built-in ``dataset`` (``ner`` or
    ``sentiment``)."""
    from presso.compress.datasets import load_builtin

    splits = load_builtin(dataset)
    test = splits.test[:limit] if limit else splits.test
    return splits, test, texts_as_sent(splits.task, test), "/ner" if splits.task == "ner" else "/classify"


def score(task: str, test: list, results: list[dict]) -> dict:
    """Entity F1 (seqeval, from the returned spans) or accuracy of ``results`` on ``test``."""
    from presso.compress.metrics import classification_metrics, ner_metrics

    if task == "ner":
        return ner_metrics([ex.tags for ex in test], [spans_to_tags(ex.tokens, r["entities"])
                                                     for ex, r in zip(test, results)])
    return classification_metrics([ex.label for ex in test], [r["label"] for r in results])


def evaluate_over_http(dataset: str, url: str, model: str | None, limit: int | None, batch: int,
                       concurrency: int) -> dict:
    splits, test, texts, endpoint = test_split(dataset, limit)
    started = time.perf_counter()
    results = asyncio.run(post_all(url, endpoint, model, texts, batch, concurrency))
    metrics = score(splits.task, test, results)
    elapsed = time.perf_counter() - started
    from presso.bench.provenance import served_versions

    served = served_versions(httpx.get(f"{url}/models", timeout=30).json()["models"])
    return {"dataset": splits.dataset, "split": "test", "examples": len(test), "url": url,
            "model": model, "models": served, "metrics": metrics, "elapsed_s": round(elapsed, 2),
            "texts_per_s": round(len(test) / elapsed, 1)}

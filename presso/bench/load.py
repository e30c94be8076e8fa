"""Bounded HTTP load generator, run as its own process so its CPU use is not the server's.

Open loop: requests arrive at ``rate_rps`` for ``duration_s`` (or closed loop with ``concurrency``
clients when ``rate_rps`` is 0), alternating /ner and /classify with real test sentences and
spreading over several replicas round-robin, as a Kubernetes Service would. At most
``max_outstanding`` requests are in flight; arrivals beyond that are counted as ``shed`` (client
side). Writes one JSON document: per-second counts by outcome and the run's totals.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import resource
import time
from collections import Counter, defaultdict

import httpx


def test_sentences(limit: int = 2000) -> list[str]:
    from compress.data import conll2003_paths, read_conll

    return [" ".join(ex.tokens) for ex in read_conll(conll2003_paths()["test"])[:limit]]


async def generate(urls: list[str], texts: list[str], rate_rps: float, concurrency: int, duration_s: float,
                   max_outstanding: int, timeout_s: float) -> dict:
    per_second: dict[int, Counter] = defaultdict(Counter)
    latencies: list[float] = []
    targets = itertools.cycle([(u, ep) for u in urls for ep in ("/ner", "/classify")])
    rng = random.Random(7)
    outstanding = 0
    start = time.monotonic()

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal outstanding
        url, endpoint = next(targets)
        t0 = time.monotonic()
        second = int(t0 - start)
        outstanding += 1
        try:
            r = await client.post(url + endpoint, json={"text": rng.choice(texts)})
            kind = "ok" if r.status_code < 400 else f"{r.status_code // 100}xx"
            if r.status_code < 400:
                latencies.append(time.monotonic() - t0)
        except httpx.HTTPError as exc:
            kind = f"transport_{type(exc).__name__}"
        finally:
            outstanding -= 1
        per_second[second][kind] += 1

    limits = httpx.Limits(max_connections=max_outstanding, max_keepalive_connections=max_outstanding)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        tasks: set[asyncio.Task] = set()
        if rate_rps > 0:
            n = 0
            while (now := time.monotonic() - start) < duration_s:
                due = n / rate_rps
                if due > now:
                    await asyncio.sleep(due - now)
                n += 1
                if outstanding >= max_outstanding:
                    per_second[int(time.monotonic() - start)]["shed"] += 1
                    continue
                task = asyncio.create_task(one(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        else:
            async def worker() -> None:
                while time.monotonic() - start < duration_s:
                    await one(client)
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        if tasks:
            await asyncio.gather(*tasks)
    elapsed = time.monotonic() - start
    totals = sum(per_second.values(), Counter())
    latencies.sort()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "elapsed_s": round(elapsed, 2),
        "totals": dict(totals),
        "ok_rps": round(totals["ok"] / elapsed, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
        "per_second": {str(k): dict(v) for k, v in sorted(per_second.items())},
        "generator_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--rate-rps", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--max-outstanding", type=int, default=256)
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--out", required=True)
    a = parser.parse_args()
    result = asyncio.run(generate(a.url, test_sentences(), a.rate_rps, a.concurrency, a.duration_s,
                                  a.max_outstanding, a.timeout_s))
    with open(a.out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()

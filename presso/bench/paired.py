"""Speed ratios from alternating measurements: robust on a shared, noisy machine."""

from __future__ import annotations

from presso.compress.evaluate import fixed_shape_latency_ms


def paired_speedup(baseline, candidate, runs: int, rounds: int = 7, shape: tuple[int, int] = (8, 128)) -> dict:
    """Throughput ratio candidate / baseline at ``shape`` from ``rounds`` alternating measurements
    (each ``runs`` calls per model): a slow spell of a shared machine hits both sides of a round,
    so the median of the per-round ratios is robust where two measurements minutes apart are not."""
    ratios = []
    for _ in range(rounds):
        base = fixed_shape_latency_ms(baseline, *shape, runs)["p50_ms"]
        cand = fixed_shape_latency_ms(candidate, *shape, runs)["p50_ms"]
        ratios.append(round(base / cand, 3))
    return {"median": round(sorted(ratios)[len(ratios) // 2], 2), "rounds": ratios, "runs_per_round": runs}

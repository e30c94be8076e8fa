"""The HorizontalPodAutoscaler's replica calculation (autoscaling/v2), for replaying a metric series.

Source: Kubernetes documentation, "Horizontal Pod Autoscaling" (algorithm details, stabilization
window, scaling policies) and ``pkg/controller/podautoscaler/horizontal.go``:

* ``desired = ceil(current * current_value / target)``, unchanged while
  ``|current_value / target - 1| <= tolerance`` (0.1); for an ``AverageValue`` Pods metric,
  ``current_value`` is the per-pod average, i.e. the query's total divided by ``current``.
* Scale-down stabilization: the highest recommendation within the window is used.
  Scale-up stabilization: the lowest within its window (0 s here: the newest).
* Policies bound the change per period; ``selectPolicy: Max`` takes the policy allowing most change.
* Finally clamped to ``[minReplicas, maxReplicas]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Policy:
    type: str  # "Percent" | "Pods"
    value: int
    period_s: int


@dataclass(frozen=True)
class Rules:
    stabilization_s: int
    policies: tuple[Policy, ...]


@dataclass
class Autoscaler:
    """Replays the HPA controller: call :meth:`step` once per sync period (15 s by default)."""

    target: float
    min_replicas: int
    max_replicas: int
    scale_up: Rules
    scale_down: Rules
    tolerance: float = 0.1
    replicas: int = 0
    _recommendations: list[tuple[float, int]] = field(default_factory=list)
    _events: list[tuple[float, int]] = field(default_factory=list)  # (time, replica change)

    def __post_init__(self) -> None:
        self.replicas = self.replicas or self.min_replicas

    @classmethod
    def from_hpa(cls, hpa: dict) -> "Autoscaler":
        """From an ``autoscaling/v2`` HorizontalPodAutoscaler manifest with one AverageValue metric."""
        spec = hpa["spec"]
        metric = spec["metrics"][0]
        target = float(metric[metric["type"].lower()]["target"]["averageValue"])

        def rules(d: dict) -> Rules:
            return Rules(int(d.get("stabilizationWindowSeconds", 0)),
                         tuple(Policy(p["type"], int(p["value"]), int(p["periodSeconds"])) for p in d["policies"]))

        return cls(target, int(spec["minReplicas"]), int(spec["maxReplicas"]),
                   rules(spec["behavior"]["scaleUp"]), rules(spec["behavior"]["scaleDown"]))

    def raw_recommendation(self, total_value: float) -> int:
        """Replicas the metric asks for, before stabilization, policies and bounds."""
        per_pod = total_value / self.replicas
        ratio = per_pod / self.target
        if abs(ratio - 1.0) <= self.tolerance:
            return self.replicas
        return math.ceil(self.replicas * ratio)

    def _limit(self, now: float, rules: Rules, up: bool) -> int:
        limits = []
        for p in rules.policies:
            changed = sum(delta for t, delta in self._events if now - t < p.period_s and (delta > 0) == up)
            start = self.replicas - changed  # replicas at the start of the period
            if p.type == "Pods":
                limits.append(start + p.value if up else start - p.value)
            elif up:
                limits.append(math.ceil(start * (1 + p.value / 100)))
            else:
                limits.append(start - math.ceil(start * p.value / 100))
        return max(limits) if up else min(limits)

    def step(self, now: float, total_value: float) -> int:
        """One controller sync at time ``now`` (seconds) with the query's total; returns replicas."""
        raw = self.raw_recommendation(total_value)
        self._recommendations.append((now, raw))
        window = max(self.scale_up.stabilization_s, self.scale_down.stabilization_s)
        self._recommendations = [(t, r) for t, r in self._recommendations if now - t <= window]
        up_candidates = [r for t, r in self._recommendations if now - t <= self.scale_up.stabilization_s]
        down_candidates = [r for t, r in self._recommendations if now - t <= self.scale_down.stabilization_s]
        desired = self.replicas
        if min(up_candidates) > self.replicas:
            desired = min(min(up_candidates), self._limit(now, self.scale_up, up=True))
        elif max(down_candidates) < self.replicas:
            desired = max(max(down_candidates), self._limit(now, self.scale_down, up=False))
        desired = max(self.min_replicas, min(self.max_replicas, desired))
        if desired != self.replicas:
            self._events.append((now, desired - self.replicas))
            self.replicas = desired
        return self.replicas

"""The HPA replay used by the autoscaling benchmark, against the documented algorithm."""

from __future__ import annotations

from pathlib import Path

import pytest

from presso.bench.hpa import Autoscaler, Policy, Rules

yaml = pytest.importorskip("yaml")
HPA = yaml.safe_load((Path(__file__).resolve().parent.parent / "deploy/k8s/base/hpa.yaml").read_text())


def test_reads_the_manifest():
    a = Autoscaler.from_hpa(HPA)
    assert (a.target, a.min_replicas, a.max_replicas, a.replicas) == (8.0, 2, 10, 2)
    assert a.scale_up == Rules(0, (Policy("Percent", 100, 15), Policy("Pods", 4, 15)))


def test_tolerance_keeps_replicas():
    a = Autoscaler.from_hpa(HPA)
    assert a.raw_recommendation(2 * 8 * 1.09) == 2  # within 10%
    assert a.raw_recommendation(2 * 8 * 1.2) == 3


def test_idle_stays_at_minimum_and_load_scales_out_within_policy_limits():
    a = Autoscaler.from_hpa(HPA)
    assert a.step(0, 0.0) == 2
    assert a.step(15, 400.0) == 6   # wants 50: +4 pods (more than +100%) per 15 s
    assert a.step(30, 400.0) == 10  # then clamped at maxReplicas
    assert a.step(45, 400.0) == 10


def test_scale_down_waits_for_the_stabilization_window_then_halves():
    a = Autoscaler.from_hpa(HPA)
    a.step(0, 400.0)
    a.step(15, 400.0)
    a.step(30, 400.0)
    assert a.replicas == 10
    assert a.step(45, 0.0) == 10    # highest recommendation of the last 60 s is still 10
    assert a.step(90, 0.0) == 10
    assert a.step(105, 0.0) == 5    # window passed: at most -50% per 30 s
    assert a.step(120, 0.0) == 5
    assert a.step(135, 0.0) == 2    # 5 - ceil(2.5) = 2, the minimum

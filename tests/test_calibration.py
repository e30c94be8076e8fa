"""Cascade calibration: threshold choice invariants (Hypothesis) and ``presso calibrate`` on fake
models, rewriting a routes file that the service then loads."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from presso.service.routing import load_routes
from presso.service.routing.calibration import answer_key, choose_thresholds
from tests.test_routing import CASCADES, cascade_models, write  # noqa: F401 (fixture)

confidence = st.sampled_from([0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0])
texts = st.integers(1, 60)


def simulate(thresholds, confidences, agrees) -> tuple[float, list[int]]:
    """The cascade itself on the calibration texts: agreement and texts answered per step."""
    n = len(confidences[0])
    answered = [0] * (len(thresholds) + 1)
    agree = 0
    for t in range(n):
        for i, threshold in enumerate(thresholds):
            if confidences[i][t] >= threshold:
                answered[i] += 1
                agree += agrees[i][t]
                break
        else:
            answered[-1] += 1
            agree += 1
    return agree / n, answered


@st.composite
def cascades(draw):
    n, steps = draw(texts), draw(st.integers(1, 3))
    conf = [draw(st.lists(confidence, min_size=n, max_size=n)) for _ in range(steps)]
    agree = [draw(st.lists(st.booleans(), min_size=n, max_size=n)) for _ in range(steps)]
    return conf, agree


@given(cascades(), st.sampled_from([0.9, 0.95, 0.99, 0.995, 1.0]))
def test_the_reported_agreement_and_shares_are_what_the_cascade_does(case, target):
    conf, agree = case
    result = choose_thresholds(conf, agree, target)
    measured, answered = simulate(result.thresholds, conf, agree)
    assert result.agreement == pytest.approx(measured, abs=1e-6)
    assert result.shares == pytest.approx([a / len(conf[0]) for a in answered], abs=1e-6)
    assert sum(result.shares) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= t <= 1.0 for t in result.thresholds)


@given(cascades(), st.sampled_from([0.9, 0.95, 0.99, 0.995, 1.0]))
def test_the_target_holds_unless_fully_confident_texts_disagree(case, target):
    conf, agree = case
    result = choose_thresholds(conf, agree, target)
    forced = any(c == 1.0 and not a for cs, ag in zip(conf, agree) for c, a in zip(cs, ag))
    if not forced:
        assert result.agreement >= target - 1e-9


@given(cascades())
def test_a_lower_target_lets_the_first_step_answer_at_least_as_much(case):
    conf, agree = case
    strict, loose = choose_thresholds(conf, agree, 1.0), choose_thresholds(conf, agree, 0.9)
    assert loose.shares[0] >= strict.shares[0]


def test_texts_that_always_agree_are_all_answered_by_the_first_step():
    result = choose_thresholds([[0.6, 0.9, 0.7]], [[True, True, True]], 0.995)
    assert result.thresholds == [0.6] and result.shares == [1.0, 0.0] and result.agreement == 1.0


def test_answer_keys_ignore_scores():
    assert answer_key("classify", {"label": "pos", "score": 0.9}) == answer_key("classify", {"label": "pos", "score": 0.5})
    a = {"entities": [{"start": 0, "end": 4, "label": "PER", "score": 0.9}]}
    b = {"entities": [{"start": 0, "end": 4, "label": "PER", "score": 0.7}]}
    assert answer_key("ner", a) == answer_key("ner", b) != answer_key("ner", {"entities": []})


def test_choose_thresholds_refuses_mismatched_input():
    with pytest.raises(ValueError):
        choose_thresholds([[0.5, 0.6]], [[True]])
    with pytest.raises(ValueError):
        choose_thresholds([], [])


@pytest.mark.parametrize("name", ["routes.yaml", "routes.json"])
def test_presso_calibrate_rewrites_the_routes_file(cascade_models, tmp_path, name):  # noqa: F811
    from typer.testing import CliRunner

    from presso.cli import app

    routes = write(tmp_path, CASCADES, name)
    corpus = tmp_path / "texts.txt"
    corpus.write_text("good day\nthe day is\n\nawful\na\nnot bad at all\n")
    result = CliRunner().invoke(app, ["calibrate", "sent", "--routes-file", str(routes), "--models-dir",
                                      str(cascade_models), "--texts", str(corpus), "--target", "0.99"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["examples"] == 5 and out["agreement"] >= 0.99
    route = load_routes(routes).routes["sent"]  # still a valid routes file
    assert route.steps[0].threshold == pytest.approx(out["thresholds"][0], abs=1e-6)
    assert route.calibration["agreement"] == out["agreement"]
    assert set(route.calibration["share_answered"]) == {"small-sent", "large-sent"}
    assert load_routes(routes).routes["ner"].steps[0].threshold == 0.99  # other routes untouched


@pytest.mark.parametrize("args, message", [
    (["nope"], "no route named 'nope'"),
    (["sent", "--texts", "MISSING"], "No such file"),
    (["sent", "--texts", "BAD.jsonl"], "BAD.jsonl:2: not JSON"),
    (["sent"], "give the texts with --dataset"),
])
def test_presso_calibrate_errors_are_one_line(cascade_models, tmp_path, args, message):  # noqa: F811
    from typer.testing import CliRunner

    from presso.cli import app

    routes = write(tmp_path, CASCADES)
    (tmp_path / "BAD.jsonl").write_text('{"text": "fine"}\n{oops\n')
    (tmp_path / "ok.txt").write_text("fine\n")
    args = [a.replace("MISSING", str(tmp_path / "missing.txt")).replace("BAD.jsonl", str(tmp_path / "BAD.jsonl"))
            for a in args]
    if "--texts" not in args and args[0] == "nope":
        args += ["--texts", str(tmp_path / "ok.txt")]
    before = routes.read_text()
    result = CliRunner().invoke(app, ["calibrate", *args, "--routes-file", str(routes), "--models-dir",
                                      str(cascade_models)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert routes.read_text() == before
    assert yaml.safe_load(before) == CASCADES

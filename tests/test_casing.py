"""Casing classes for uncased encoders: one function for training, evaluation and serving; the
widened type embedding exports and runs; the service computes casing only for models built with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from presso.core.casing import CASING_CLASSES, LOWER, MIXED, NONE, TITLE, UPPER, case_class, casing_type_ids, lowercases
from presso.core.encoding import TextEncoder
from tests.fakes import write_artifact, write_tokenizer


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


@pytest.mark.parametrize("piece, cls", [
    ("paris", LOWER), ("Paris", TITLE), ("A", TITLE), ("EU", UPPER), ("U.S.", UPPER), ("iPhone", MIXED),
    ("McDonald", MIXED), ("1996", NONE), (",", NONE), ("", NONE), ("東京", NONE), ("Zürich", TITLE),
    ("ÉCOLE", UPPER), ("x1", LOWER),
])
def test_case_class(piece, cls):
    assert case_class(piece) == cls


def test_raw_text_and_pre_split_words_give_the_same_classes(tokenizer_path):
    encoder = TextEncoder(tokenizer_path, 32, casing=True)
    raw = encoder.encode(["John SMITH lives in paris ."])[0]
    words = encoder.encode_words([["John", "SMITH", "lives", "in", "paris", "."]])[0]
    assert raw.type_ids == words.type_ids == [NONE, TITLE, UPPER, LOWER, LOWER, LOWER, NONE, NONE]
    assert TextEncoder(tokenizer_path, 32).encode(["John SMITH"])[0].type_ids == [0, 0, 0, 0]


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=120))
def test_casing_ids_are_valid_and_windows_agree_with_the_whole_text(tokenizer_path, text):
    encoder = TextEncoder(tokenizer_path, 12, stride_tokens=3, casing=True)
    whole = TextEncoder(tokenizer_path, 4096, casing=True).encode([text])[0]
    assert len(whole.type_ids) == whole.length
    assert all(0 <= t < len(CASING_CLASSES) for t in whole.type_ids)
    assert [t for t, w in zip(whole.type_ids, whole.word_ids) if w is None] == [NONE] * whole.word_ids.count(None)
    by_token = {(w, o): t for t, w, o in zip(whole.type_ids, whole.word_ids, whole.offsets) if w is not None}
    for window in encoder.encode_windows([text])[0]:
        for t, w, o in zip(window.type_ids, window.word_ids, window.offsets):
            if w is not None:
                assert by_token[(w, o)] == t


def test_training_features_use_the_service_function(tokenizer_path):
    transformers = pytest.importorskip("transformers")
    from presso.compress.data import NerExample
    from presso.compress.train import ner_features

    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_path), pad_token="[PAD]",
                                              cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]")
    examples = [NerExample(["John", "SMITH", "visited", "Paris", "."], ["B-PER", "I-PER", "O", "B-LOC", "O"]),
                NerExample(["new", "York", "iS", "1996"], ["B-LOC", "I-LOC", "O", "O"])]
    labels = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    feats = ner_features(hf, examples, labels, 32, casing=True)
    served = TextEncoder(tokenizer_path, 32, casing=True).encode_words([ex.tokens for ex in examples])
    assert [f["token_type_ids"] for f in feats] == [e.type_ids for e in served]
    assert feats[1]["token_type_ids"][1:5] == [LOWER, TITLE, MIXED, NONE]


def test_lowercases_tells_uncased_from_cased(tokenizer_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    assert lowercases(Tokenizer.from_file(str(tokenizer_path)))
    cased = Tokenizer(models.WordLevel({"Paris": 0, "paris": 1, "EU": 2, "eu": 3, "[UNK]": 4}, unk_token="[UNK]"))
    cased.pre_tokenizer = pre_tokenizers.Whitespace()
    assert not lowercases(cased)


def test_widened_type_embedding_keeps_outputs_exports_and_accepts_every_class(tmp_path, tokenizer_path):
    torch = pytest.importorskip("torch")
    from presso.compress.export import check_parity, export_onnx
    from presso.compress.train import as_numpy_logits, enable_casing, uses_casing
    from presso.core.encoding import pad_batch
    from presso.core.runtime import OnnxModel
    from tests.fakes import tiny_bert

    model = tiny_bert()
    encoder = TextEncoder(tokenizer_path, 32, casing=True)
    batch = pad_batch(encoder.encode(["John SMITH lives in Paris", "the iS day"]))
    assert set(batch["token_type_ids"].flatten()) >= {NONE, LOWER, TITLE, UPPER, MIXED}
    before = as_numpy_logits(model)({**batch, "token_type_ids": np.zeros_like(batch["token_type_ids"])})
    enable_casing(model)
    assert uses_casing(model) and model.config.type_vocab_size == len(CASING_CLASSES)
    np.testing.assert_allclose(as_numpy_logits(model)(batch), before, atol=1e-6)  # new rows = the old row 0
    with torch.no_grad():  # as after training: the classes differ
        model.bert.embeddings.token_type_embeddings.weight.normal_()
    model.save_pretrained(tmp_path / "ckpt")
    reloaded = type(model).from_pretrained(tmp_path / "ckpt")
    assert uses_casing(reloaded)
    onnx_path = export_onnx(reloaded, "ner", tmp_path / "model.onnx")
    assert check_parity(as_numpy_logits(reloaded), OnnxModel(onnx_path).run, [batch], atol=1e-4) < 1e-4


def test_the_service_computes_casing_only_for_models_built_with_it(tmp_path):
    pytest.importorskip("onnx")
    from presso.service.registry import LoadedModel

    plain = LoadedModel(write_artifact(tmp_path, "plain", "ner"), ["CPUExecutionProvider"], 1)
    d = write_artifact(tmp_path, "cased", "ner")
    manifest = json.loads((d / "manifest.json").read_text())
    (d / "manifest.json").write_text(json.dumps({**manifest, "casing": {"enabled": True}}))
    cased = LoadedModel(d, ["CPUExecutionProvider"], 1)
    text = "John SMITH lives in Paris"
    assert plain.tokenize([text])[0][0].encoded.type_ids == [0] * 7
    assert cased.tokenize([text])[0][0].encoded.type_ids == [NONE, TITLE, UPPER, LOWER, LOWER, TITLE, NONE]
    assert [e["text"] for e in cased.assemble(text, cased.infer(cased.tokenize([text])[0]))["entities"]] == [
        "John SMITH", "Paris"]

"""Tiny fake model artifacts for fast tests: a real WordPiece tokenizer over a small vocabulary and
ONNX graphs whose logits depend only on each token id, so expected answers are known exactly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from presso.core.manifest import Manifest, Task, file_checksums

NER_LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
CLASS_LABELS = ["negative", "neutral", "positive"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["john", "smith", "lives", "in", "paris", "new", "york", "the", "is", "good", "bad", "awful",
         "great", "day", "a", "##s", "##ville", "jack", ".", ",", "!", "-", "'", "u", "s", "e"]
VOCAB = SPECIAL + WORDS
# token -> NER label: first names begin a person, surnames continue it, cities are locations.
TOKEN_TAG = {"john": "B-PER", "jack": "B-PER", "smith": "I-PER", "##s": "I-PER", "paris": "B-LOC",
             "new": "B-LOC", "york": "I-LOC", "##ville": "I-LOC"}
TOKEN_SENTIMENT = {"good": "positive", "great": "positive", "bad": "negative", "awful": "negative"}


def write_tokenizer(path: Path) -> Path:
    """An uncased BERT WordPiece ``tokenizer.json`` (normaliser, pre-tokenizer, [CLS]/[SEP])."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate(VOCAB)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece()
    tok.save(str(path))
    return path


def token_logits_table(kind: str, num_labels: int | None = None) -> np.ndarray:
    """``[vocab, num_labels]``: a large logit on each token's intended label (``num_labels``: a
    classifier with that many labels instead, the sentiment words' logits on its first ones)."""
    labels = NER_LABELS if kind == "ner" else CLASS_LABELS
    if num_labels is not None and kind != "ner":
        table = np.zeros((len(VOCAB), num_labels), dtype=np.float32)
        for i, tok in enumerate(VOCAB):
            if tok in TOKEN_SENTIMENT:
                table[i, CLASS_LABELS.index(TOKEN_SENTIMENT[tok]) % num_labels] = 5.0
        return table
    table = np.zeros((len(VOCAB), len(labels)), dtype=np.float32)
    for i, tok in enumerate(VOCAB):
        if kind == "ner":
            table[i, labels.index(TOKEN_TAG.get(tok, "O"))] = 5.0
        elif tok in TOKEN_SENTIMENT:
            table[i, labels.index(TOKEN_SENTIMENT[tok])] = 5.0
        else:
            table[i, labels.index("neutral")] = 0.1
    return table


def write_onnx(path: Path, kind: str, num_labels: int | None = None, table: np.ndarray | None = None) -> Path:
    """ONNX graph with inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64
    ``[batch, sequence]``) and output ``logits``: ``[batch, sequence, labels]`` (ner) or the
    attention-masked sum over tokens ``[batch, labels]`` (classify); ``table`` (``[vocab, labels]``)
    replaces :func:`token_logits_table`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(token_logits_table(kind, num_labels) if table is None else table, "table")
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["tok_logits"], axis=0)]
    if kind == "ner":
        nodes.append(helper.make_node("Identity", ["tok_logits"], ["logits"]))
        out_shape = ["batch", "sequence", len(NER_LABELS)]
    else:
        axes = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes2")
        axes1 = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes1")
        nodes += [
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask_f", "axes2"], ["mask3"]),
            helper.make_node("Mul", ["tok_logits", "mask3"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "axes1"], ["logits"], keepdims=0),
        ]
        out_shape = ["batch", num_labels or len(CLASS_LABELS)]
    inits = [table] + ([] if kind == "ner" else [axes, axes1])
    graph = helper.make_graph(nodes, f"fake-{kind}", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_artifact(root: Path, name: str, kind: str, max_seq_len: int = 32, labels: list[str] | None = None,
                   table: np.ndarray | None = None) -> Path:
    """A complete fake ``models/<name>/`` artifact with a valid manifest and checksum; ``labels``
    renames NER's five tags, or gives a classifier its own label set; ``table``: its own per-token
    logits (see :func:`write_onnx`)."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    write_tokenizer(d / "tokenizer.json")
    write_onnx(d / "model.onnx", kind, None if labels is None or kind == "ner" else len(labels), table)
    Manifest(name=name, task=Task.from_short("ner" if kind == "ner" else "classify"),
             labels=labels or (NER_LABELS if kind == "ner" else CLASS_LABELS), max_seq_len=max_seq_len,
             model_file="model.onnx",
             model_sha256=hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest(),
             files=file_checksums(d)).write(d)
    return d


def tiny_bert(num_hidden_layers: int = 3, num_attention_heads: int = 4, intermediate_size: int = 64, seed: int = 0):
    """A small random ``BertForTokenClassification`` over :data:`VOCAB` (needs torch + transformers)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=num_hidden_layers,
                                     num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
                                     max_position_embeddings=64, num_labels=len(NER_LABELS))
    return transformers.BertForTokenClassification(config).eval()

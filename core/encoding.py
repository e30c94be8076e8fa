"""Tokenization with the Hugging Face ``tokenizers`` library (no torch) and batch padding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer

from presso.core.casing import casing_type_ids


@dataclass(frozen=True)
class Encoded:
    """One tokenized text: ``ids``/``type_ids`` ``[seq_len]``, ``word_ids``, char ``offsets``.

    ``type_ids`` are the tokenizer's segment ids, or casing classes (:mod:`presso.core.casing`) for a
    model trained with them."""

    ids: list[int]
    type_ids: list[int]
    word_ids: list[int | None]
    offsets: list[tuple[int, int]]
    truncated: bool

    @property
    def length(self) -> int:
        return len(self.ids)


class TextEncoder:
    """Wraps ``tokenizer.json`` from a model artifact.

    Args:
        tokenizer_path: path to a ``tokenizers`` JSON file.
        max_seq_len: longest sequence in tokens, special tokens included; longer input is truncated
            (:meth:`encode`) or split into windows (:meth:`encode_windows`).
        stride_tokens: tokens shared by consecutive windows (capped at half a window).
        casing: put each token's casing class in ``type_ids`` (for models built with casing).
    """

    def __init__(self, tokenizer_path: str | Path, max_seq_len: int, stride_tokens: int = 0,
                 casing: bool = False) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.pad_id = pad_token_id(self.tokenizer)
        self.tokenizer.no_padding()
        special = self.tokenizer.num_special_tokens_to_add(is_pair=False)
        self.stride_tokens = max(0, min(stride_tokens, (max_seq_len - special) // 2))
        self.tokenizer.enable_truncation(max_length=max_seq_len, stride=self.stride_tokens)
        self.max_seq_len = max_seq_len
        self.casing = casing

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Tokenize raw texts, truncated to ``max_seq_len``; offsets are code-point offsets into each text."""
        texts = list(texts)
        return [self._encoded(e, t) for e, t in zip(self.tokenizer.encode_batch(texts), texts)]

    def encode_windows(self, texts: Sequence[str]) -> list[list[Encoded]]:
        """Tokenize raw texts into overlapping windows of at most ``max_seq_len`` tokens.

        Each window has its own special tokens; ``word_ids`` and ``offsets`` refer to the whole
        text, and consecutive windows share ``stride_tokens`` tokens (``tokenizers`` overflow).
        """
        texts = list(texts)
        out = []
        for e, text in zip(self.tokenizer.encode_batch(texts), texts):
            windows = [e, *e.overflowing]
            out.append([self._encoded(w, text, truncated=False) for w in windows])
        return out

    def encode_words(self, sentences: Sequence[Sequence[str]]) -> list[Encoded]:
        """Tokenize pre-split words (e.g. CoNLL tokens); ``word_ids`` index the given words."""
        sentences = [list(s) for s in sentences]
        return [self._encoded(e, words) for e, words in
                zip(self.tokenizer.encode_batch(sentences, is_pretokenized=True), sentences)]

    def _encoded(self, e: Encoding, source: str | list[str], truncated: bool | None = None) -> Encoded:
        truncated = bool(e.overflowing) if truncated is None else truncated
        word_ids, offsets = list(e.word_ids), list(e.offsets)
        type_ids = casing_type_ids(word_ids, offsets, source) if self.casing else list(e.type_ids)
        return Encoded(list(e.ids), type_ids, word_ids, offsets, truncated)


PAD_TOKENS = ("[PAD]", "<pad>", "<PAD>", "[pad]")  # WordPiece (BERT), BPE / SentencePiece (RoBERTa, XLM-R, DeBERTa)


def pad_token_id(tokenizer: Tokenizer) -> int:
    """The padding token's id: the tokenizer's padding setting if it has one, else the first of
    :data:`PAD_TOKENS` in its vocabulary, else 0. (Padded positions are masked out, so the id only
    has to be a valid one; RoBERTa's ``<pad>`` is 1, not 0.)"""
    if tokenizer.padding and tokenizer.padding.get("pad_id") is not None:
        return int(tokenizer.padding["pad_id"])
    for token in PAD_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    return 0


def pad_batch(items: Sequence[Encoded], pad_id: int = 0) -> dict[str, np.ndarray]:
    """Right-pad to the longest item.

    Returns:
        ``input_ids``, ``attention_mask``, ``token_type_ids``: int64 arrays ``[batch, seq_len]``.
    """
    seq_len = max(item.length for item in items)
    ids = np.full((len(items), seq_len), pad_id, dtype=np.int64)
    mask = np.zeros((len(items), seq_len), dtype=np.int64)
    types = np.zeros((len(items), seq_len), dtype=np.int64)
    for row, item in enumerate(items):
        ids[row, : item.length] = item.ids
        mask[row, : item.length] = 1
        types[row, : item.length] = item.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def artifact_encoder(path: Path, manifest, stride_tokens: int = 0) -> TextEncoder:
    """The artifact's tokenizer as its model was trained: ``max_seq_len`` and, when the manifest's
    ``casing.enabled`` says so, casing classes in ``token_type_ids``.

    Args:
        path: the artifact folder (holding ``tokenizer.json``).
        manifest: its :class:`presso.core.manifest.Manifest`.
        stride_tokens: tokens shared by consecutive windows of a long text.
    """
    return TextEncoder(Path(path) / "tokenizer.json", manifest.max_seq_len, stride_tokens, manifest.casing.enabled)

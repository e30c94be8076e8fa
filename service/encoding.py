"""Tokenization with the Hugging Face ``tokenizers`` library (no torch) and batch padding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tokenizers import Encoding, Tokenizer


@dataclass(frozen=True)
class Encoded:
    """One tokenized text: ``ids``/``type_ids`` ``[seq_len]``, ``word_ids``, char ``offsets``."""

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
    """

    def __init__(self, tokenizer_path: str | Path, max_seq_len: int, stride_tokens: int = 0) -> None:
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        special = self.tokenizer.num_special_tokens_to_add(is_pair=False)
        self.stride_tokens = max(0, min(stride_tokens, (max_seq_len - special) // 2))
        self.tokenizer.enable_truncation(max_length=max_seq_len, stride=self.stride_tokens)
        self.max_seq_len = max_seq_len
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Tokenize raw texts, truncated to ``max_seq_len``; offsets are code-point offsets into each text."""
        return [_encoded(e) for e in self.tokenizer.encode_batch(list(texts))]

    def encode_windows(self, texts: Sequence[str]) -> list[list[Encoded]]:
        """Tokenize raw texts into overlapping windows of at most ``max_seq_len`` tokens.

        Each window has its own special tokens; ``word_ids`` and ``offsets`` refer to the whole
        text, and consecutive windows share ``stride_tokens`` tokens (``tokenizers`` overflow).
        """
        out = []
        for e in self.tokenizer.encode_batch(list(texts)):
            windows = [e, *e.overflowing]
            out.append([_encoded(w, truncated=False) for w in windows])
        return out

    def encode_words(self, sentences: Sequence[Sequence[str]]) -> list[Encoded]:
        """Tokenize pre-split words (e.g. CoNLL tokens); ``word_ids`` index the given words."""
        return [_encoded(e) for e in self.tokenizer.encode_batch([list(s) for s in sentences], is_pretokenized=True)]


def _encoded(e: Encoding, truncated: bool | None = None) -> Encoded:
    truncated = bool(e.overflowing) if truncated is None else truncated
    return Encoded(list(e.ids), list(e.type_ids), list(e.word_ids), list(e.offsets), truncated)


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

"""Casing classes for uncased encoders: pure functions, no I/O.

An uncased tokenizer (BERT uncased, MiniLM) lowercases before it splits, so capitalisation, the
strongest surface cue for English named entities, never reaches the model. Presso gives such a
model one casing class per sub-token, computed from the original characters the sub-token covers,
through the ``token_type_ids`` input the exported graph already has (the type-embedding table is
widened to :data:`CASING_CLASSES` rows, the new rows initialised from the existing type
embedding; see ``presso.compress.train.enable_casing``). The same function serves training, evaluation
and serving, so the three cannot drift apart. Classic NER systems feed the same signal as a
feature (e.g. the word-shape / casing embedding of Lample et al. 2016 and Reimers & Gurevych 2017).
"""

from __future__ import annotations

from typing import Sequence

# type id -> class; 0 is also what special tokens and padding carry, so they keep the original
# type embedding.
CASING_CLASSES = ("no_cased_letter", "lower", "title", "upper", "mixed")
NONE, LOWER, TITLE, UPPER, MIXED = range(len(CASING_CLASSES))


def case_class(piece: str) -> int:
    """Casing class of one sub-token's original characters.

    Only cased letters count (digits, punctuation and caseless scripts such as CJK do not):
    none -> ``NONE``; all lower -> ``LOWER``; the first upper and the rest lower (``Paris``, ``A``)
    -> ``TITLE``; two or more, all upper (``EU``) -> ``UPPER``; anything else (``iPhone``) -> ``MIXED``.
    """
    cased = [c for c in piece if c.isupper() or c.islower()]
    if not cased:
        return NONE
    if all(c.islower() for c in cased):
        return LOWER
    if cased[0].isupper() and all(c.islower() for c in cased[1:]):
        return TITLE
    if all(c.isupper() for c in cased):
        return UPPER
    return MIXED


def casing_type_ids(word_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]],
                    source: str | Sequence[str]) -> list[int]:
    """``[seq_len]`` casing class of every token of one sequence (0 for special tokens).

    Args:
        word_ids: ``[seq_len]`` word index of each token, None for special tokens.
        offsets: ``[seq_len]`` char offsets of each token: into ``source`` when it is the raw text,
            or into its word when ``source`` is a list of pre-split words (how ``tokenizers``
            reports offsets of pre-tokenized input).
        source: the raw text, or the pre-split words.
    """
    raw = isinstance(source, str)
    out = []
    for w, (start, end) in zip(word_ids, offsets):
        if w is None:
            out.append(NONE)
        else:
            out.append(case_class((source if raw else source[w])[start:end]))
    return out


def lowercases(tokenizer) -> bool:
    """True when a ``tokenizers.Tokenizer`` maps upper- and lower-case text to the same ids."""
    return tokenizer.encode("Paris EU").ids == tokenizer.encode("paris eu").ids

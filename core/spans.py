"""Token classification post-processing: per-token logits to entity spans. Pure functions, no I/O.

A *word* is a unit of the tokenizer's pre-tokenizer (for BERT: split on whitespace and
punctuation), identified by ``word_ids``. Each word is labelled by its first sub-token, as the
model was trained (labels aligned to the first sub-token, Devlin et al. 2019, section 5.3), so the
sub-word pieces of one word can never split an entity. A text's word labels are decoded jointly
by :func:`iob2_viterbi` (the most probable tag sequence that is valid IOB2) rather than by an
independent argmax per word. Words are grouped into entity spans with the IOB2 scheme; an ``I-X``
that does not continue an ``X`` entity (possible only with ``constrained=False``) starts a new one
(the lenient reading of ``conlleval``).
"""

from __future__ import annotations

import functools

import unicodedata
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Word:
    """One word's prediction: IOB2 ``tag``, its probability ``score`` and char span ``[start, end)``."""

    tag: str
    score: float
    start: int
    end: int


@dataclass(frozen=True)
class EntitySpan:
    """An entity: ``label`` without the B-/I- prefix; ``text == source[start:end]`` (code points)."""

    label: str
    text: str
    start: int
    end: int
    score: float

    def as_dict(self) -> dict:
        return {"label": self.label, "text": self.text, "start": self.start, "end": self.end,
                "score": round(self.score, 6)}


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax; ``logits`` of any shape, float32 output of the same shape."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted, dtype=np.float32)
    return exp / exp.sum(axis=axis, keepdims=True)


def first_subtokens(word_ids: Sequence[int | None]) -> list[int]:
    """Index of the first sub-token of every word, in word order (special tokens have id None)."""
    seen: set[int] = set()
    firsts: list[int] = []
    for i, w in enumerate(word_ids):
        if w is not None and w not in seen:
            seen.add(w)
            firsts.append(i)
    return firsts


@dataclass(frozen=True)
class WindowWord:
    """A word as seen in one window of a long text.

    ``word`` indexes the words of the whole text; ``start``/``end`` are the char offsets of the
    word's sub-tokens inside this window (a window may cut a word); ``margin`` is the distance in
    tokens from the word's first sub-token to the nearer edge of the window's content; ``probs``
    ``[num_labels]`` are the label probabilities at that first sub-token (``tag``/``score``: their
    argmax).
    """

    word: int
    tag: str
    score: float
    start: int
    end: int
    margin: int
    probs: np.ndarray | None = field(default=None, compare=False, repr=False)


def window_words(
    logits: np.ndarray,
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    labels: Sequence[str],
) -> list[WindowWord]:
    """Label every word of one window by its first sub-token in that window.

    Args:
        logits: ``[seq_len, num_labels]`` for one sequence (padding may follow; it is ignored).
        word_ids: ``[seq_len]`` word index of each token, None for special tokens.
        offsets: ``[seq_len]`` char offsets ``(start, end)`` of each token in the source text.
        labels: ``[num_labels]`` IOB2 tag of each class id.
    """
    probs = softmax(logits[: len(word_ids)])
    content = [i for i, w in enumerate(word_ids) if w is not None]
    if not content:
        return []
    lo, hi = content[0], content[-1]
    last: dict[int, int] = {}
    for i in content:
        last[word_ids[i]] = i
    out = []
    for i in first_subtokens(word_ids):
        cls = int(probs[i].argmax())
        out.append(WindowWord(word_ids[i], labels[cls], float(probs[i, cls]), offsets[i][0],
                              offsets[last[word_ids[i]]][1], min(i - lo, hi - i), probs[i]))
    return out


def allowed_transitions(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """IOB2 constraints as ``(start [num_labels], transition [num_labels, num_labels])`` booleans:
    ``I-X`` may not start a text, and may follow only ``B-X`` or ``I-X``. Labels without a
    ``B-``/``I-`` prefix are unconstrained. Computed once per label set (read-only arrays)."""
    return _transitions(tuple(labels))


@functools.lru_cache(maxsize=64)
def _transitions(labels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    kinds = [label.partition("-") if label[:2] in ("B-", "I-") else ("", "", label) for label in labels]
    start = np.array([prefix != "I" for prefix, _, _ in kinds])
    transition = np.ones((len(labels), len(labels)), dtype=bool)
    for cur, (prefix, _, etype) in enumerate(kinds):
        if prefix == "I":
            for prev, (p_prefix, _, p_type) in enumerate(kinds):
                transition[prev, cur] = p_prefix in ("B", "I") and p_type == etype
    start.flags.writeable = transition.flags.writeable = False
    return start, transition


def iob2_viterbi(probs: np.ndarray, labels: Sequence[str]) -> list[int]:
    """The most probable label sequence (product of per-word probabilities) that is valid IOB2.

    Viterbi decoding (Viterbi 1967) over hard transition constraints, the usual way to decode a
    softmax tagger into well-formed spans (e.g. AllenNLP's ``allowed_transitions`` with
    ``viterbi_decode``).

    Args:
        probs: ``[num_words, num_labels]`` label probabilities of one text's words, in order.
        labels: ``[num_labels]`` IOB2 tag of each class id.

    Returns:
        ``[num_words]`` class ids.
    """
    if len(probs) == 0:
        return []
    start, transition = allowed_transitions(labels)
    argmax = probs.argmax(axis=1)
    if start[argmax[0]] and transition[argmax[:-1], argmax[1:]].all():
        return argmax.tolist()  # a valid argmax maximises every factor: it is the optimum (usual case)
    log_p = np.log(np.clip(probs.astype(np.float64), 1e-30, None))
    penalty = np.where(transition, 0.0, -np.inf)
    score = np.where(start, log_p[0], -np.inf)
    back = np.zeros((len(probs), len(labels)), dtype=np.int64)
    for t in range(1, len(probs)):
        candidates = score[:, None] + penalty  # [prev, cur]
        back[t] = candidates.argmax(axis=0)
        score = candidates.max(axis=0) + log_p[t]
    path = [int(score.argmax())]
    for t in range(len(probs) - 1, 0, -1):
        path.append(int(back[t, path[-1]]))
    return path[::-1]


def merge_windows(windows: Sequence[Sequence[WindowWord]], labels: Sequence[str] | None = None) -> list[Word]:
    """Merge the words of overlapping windows into one prediction per word, in text order.

    A word is labelled from the window that holds its true first sub-token (the one starting at
    the word's smallest start offset) farthest from that window's edges, where the model saw the
    most context on both sides (the usual sliding-window rule for token classification, e.g.
    the stride handling in BERT's SQuAD code, Devlin et al. 2019). Its span runs from that first
    sub-token to the last sub-token seen in any window.

    With ``labels`` (``[num_labels]``) the text's tags are decoded jointly by :func:`iob2_viterbi`
    from those windows' probabilities; without, each word keeps its own argmax.
    """
    best, spans = _best_windows(windows)
    if labels is None:
        return [Word(w.tag, w.score, start, end) for w, (start, end) in zip(best, spans)]
    probs = np.stack([w.probs for w in best]) if best else np.zeros((0, len(labels)))
    return decode_words(probs, spans, labels)


def merged_probs(windows: Sequence[Sequence[WindowWord]], num_labels: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Each word's char span and label probabilities ``[num_words, num_labels]``, chosen across
    windows as :func:`merge_windows` chooses them (what a weighted combination of models mixes)."""
    best, spans = _best_windows(windows)
    return spans, np.stack([w.probs for w in best]) if best else np.zeros((0, num_labels))


def decode_words(probs: np.ndarray, spans: Sequence[tuple[int, int]], labels: Sequence[str]) -> list[Word]:
    """IOB2-constrained words (:func:`iob2_viterbi`) from ``probs`` ``[num_words, num_labels]`` and
    each word's char span."""
    tags = iob2_viterbi(probs, labels)
    return [Word(labels[c], float(p[c]), start, end) for (start, end), c, p in zip(spans, tags, probs)]


def _best_windows(windows: Sequence[Sequence[WindowWord]]) -> tuple[list[WindowWord], list[tuple[int, int]]]:
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    for window in windows:
        for w in window:
            start[w.word] = min(start.get(w.word, w.start), w.start)
            end[w.word] = max(end.get(w.word, w.end), w.end)
    best: dict[int, WindowWord] = {}
    for window in windows:
        for w in window:
            if w.start == start[w.word] and (w.word not in best or w.margin > best[w.word].margin):
                best[w.word] = w
    order = sorted(best)
    return [best[i] for i in order], [(start[i], end[i]) for i in order]


def word_predictions(
    logits: np.ndarray,
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    labels: Sequence[str],
    constrained: bool = True,
) -> list[Word]:
    """Label every word of one sequence by its first sub-token (arguments as :func:`window_words`):
    jointly by :func:`iob2_viterbi` when ``constrained``, else an independent argmax per word.

    Returns:
        One :class:`Word` per word, spanning from its first to its last sub-token.
    """
    return merge_windows([window_words(logits, word_ids, offsets, labels)], labels if constrained else None)


def group_entities(words: Sequence[Word], text: str) -> list[EntitySpan]:
    """Group IOB2-tagged words into entity spans over ``text``; the score is the words' mean."""
    spans: list[EntitySpan] = []
    current: list[Word] = []
    current_type = ""

    def close() -> None:
        if current:
            start, end = current[0].start, current[-1].end
            # byte-level BPE and SentencePiece pieces may carry the space before a word in their
            # offsets; an entity never starts or ends with whitespace
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            # Uncased tokenizers strip accents and other marks, so a trailing mark (U+0301, a
            # variation selector U+FE0F, a Devanagari vowel sign) falls
            # outside the last token's offsets; keep it with its base character.
            while end < len(text) and unicodedata.category(text[end]).startswith("M"):
                end += 1
            if start < end:  # a word of only whitespace (a lone "▁" or "Ġ" piece) is no entity
                score = sum(w.score for w in current) / len(current)
                spans.append(EntitySpan(current_type, text[start:end], start, end, score))
            current.clear()

    for word in words:
        prefix, _, etype = word.tag.partition("-")
        if prefix in ("B", "I") and _pictographic(text[word.start:word.end]):
            prefix = "O"  # an emoji or flag next to a name is never part of it (the model sees [UNK])
        if prefix == "B" or (prefix == "I" and etype != current_type):
            close()
            current_type = etype
            current.append(word)
        elif prefix == "I":
            current.append(word)
        else:
            close()
            current_type = ""
    close()
    return spans


def _pictographic(word: str) -> bool:
    """True for a word made only of "other symbol" characters (emoji, flags, pictographs: Unicode
    category So) and joiners/variation selectors; punctuation such as the & of AT&T is not."""
    return bool(word) and all(unicodedata.category(c) in ("So", "Sk", "Mn", "Cf") or c == "\u200d" for c in word) \
        and any(unicodedata.category(c) == "So" for c in word)


def extract_entities(
    text: str,
    logits: np.ndarray,
    word_ids: Sequence[int | None],
    offsets: Sequence[tuple[int, int]],
    labels: Sequence[str],
    constrained: bool = True,
) -> list[EntitySpan]:
    """Entity spans of one text from its token logits ``[seq_len, num_labels]``."""
    return group_entities(word_predictions(logits, word_ids, offsets, labels, constrained), text)

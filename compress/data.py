"""The data types every stage shares: examples, splits, IOB2 tags, and :class:`DataError`.

Readers of users' files are in :mod:`presso.compress.readers`, the built-in corpora and the assembly of
train / validation / test splits in :mod:`presso.compress.datasets`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

_TAG_RE = re.compile(r"^(O|[BI]-\S+)$")


class DataError(ValueError):
    """A data file is malformed; the message names the file, the line (or Parquet row) and the problem."""

    def __init__(self, path: str | Path, line: int | None, problem: str, row_numbers: bool = False) -> None:
        if line is None:
            where = str(path)
        else:
            where = f"{path}: row {line}" if row_numbers else f"{path}:{line}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class NerExample:
    """One sentence: ``tokens[i]`` carries IOB2 tag ``tags[i]``; ``line``: where it starts in its file."""

    tokens: list[str]
    tags: list[str]
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class TextExample:
    """One text and its label; ``line``: its line (or Parquet row) in its file."""

    text: str
    label: str
    line: int | None = field(default=None, compare=False)


@dataclass
class Splits:
    """Train / validation / test examples plus the label set read from the data.

    ``labels`` is ordered deterministically (for NER ``O`` first, then ``B-X``/``I-X`` pairs by
    entity type); its index is the class id the model is trained with.
    """

    task: str  # "ner" | "classify"
    dataset: str
    train: list
    validation: list
    test: list
    labels: list[str]
    notes: dict = field(default_factory=dict)
    builtin: bool = False  # a built-in corpus, whose training budgets the profiles measured

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


# ---------------------------------------------------------------------------------------------
# Token classification


def to_iob2(tags: list[str]) -> list[str]:
    """Convert IOB1 (``I-X`` may start an entity) to IOB2 (every entity starts with ``B-X``).

    IOB2 input is returned unchanged.
    """
    out: list[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return out


def valid_tag(tag: str) -> bool:
    """``O``, ``B-TYPE`` or ``I-TYPE`` (IOB1 or IOB2)."""
    return bool(_TAG_RE.match(tag))


def ner_labels(examples: list[NerExample]) -> list[str]:
    """IOB2 label list: ``O``, then ``B-X``, ``I-X`` for every entity type X in sorted order."""
    types = sorted({t[2:] for ex in examples for t in ex.tags if t != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def stratified_split(
    examples: Sequence, fractions: tuple[float, float, float], seed: int, key: Callable = lambda ex: ex.label,
) -> tuple[list, list, list]:
    """Deterministic per-stratum shuffle and split into (train, validation, test).

    Args:
        examples: any examples; ``key(example)`` is its stratum (default: its label).
        fractions: shares of (train, validation, test); each stratum is split with them, rounded.
        seed: seed of the shuffles (same seed and input, same split).
    """
    by_key: dict[str, list] = {}
    for ex in examples:
        by_key.setdefault(key(ex), []).append(ex)
    rng = random.Random(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for stratum in sorted(by_key):
        items = by_key[stratum]
        rng.shuffle(items)
        n_val = round(len(items) * fractions[1])
        n_test = round(len(items) * fractions[2])
        parts[2].extend(items[:n_test])
        parts[1].extend(items[n_test : n_test + n_val])
        parts[0].extend(items[n_test + n_val :])
    for part in parts:
        rng.shuffle(part)
    return parts

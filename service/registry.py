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

from presso.core.encoding import Encoded, artifact_encoder, pad_batch
from presso.core.manifest import ArtifactError, Manifest, Task, read_artifact
from presso.core.reference import max_reference_difference
from presso.core.runtime import OnnxModel, RuntimeSetupError
from presso.service.tasks import plugin_for

log = logging.getLogger(__name__)

TOKENIZE_CHUNK = 16  # texts tokenized between two checks of a request's token bound


class TooManyTokens(ValueError):
    """A request has more tokens than it may queue."""


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
        self.manifest: Manifest = read_artifact(path)
        self.version: str = self.manifest.version
        self.loaded_at = time.time()
        self.name: str = self.manifest.name
        self.task: Task = self.manifest.task
        self.plugin = plugin_for(self.task)
        self.labels: list[str] = list(self.manifest.labels)
        # Decoding as the model was built and evaluated; manifests from before it was recorded get
        # Viterbi (right for any IOB2 model).
        self.constrained = self.manifest.constrained_decoding
        try:
            self.encoder = artifact_encoder(path, self.manifest, stride_tokens)
        except Exception as exc:  # the tokenizers library raises plain Exception for a bad file
            raise ArtifactError(f"{path}/tokenizer.json cannot be loaded: {exc}") from exc
        self.onnx = OnnxModel(path / self.manifest.model_file, providers, intra_op_threads, spinning)
        self._check_logits()
        self._check_reference()
        # Alone, nothing competes for the cores, and without spinning each of the graph's ~100
        # parallel operators would pay a thread wake-up (measured: p50 at 1 client 3.2 -> 4.9 ms).
        self.onnx_alone = (OnnxModel(path / self.manifest.model_file, providers, 0, spinning=True)
                           if alone_session and intra_op_threads != 0 else self.onnx)

    def _check_logits(self) -> None:
        """Run one sequence of ``max_seq_len`` tokens: the model must accept the manifest's length and
        give ``[1, seq_len, num_labels]`` / ``[1, num_labels]`` logits for the manifest's labels.

        Raises:
            ArtifactError: it fails or the logits do not match the manifest.
        """
        encoded = self.encoder.encode(["x " * self.encoder.max_seq_len])[0]
        try:
            logits = self.onnx.run(pad_batch([encoded], self.encoder.pad_id))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ArtifactError(f"{self.path}: the model fails on a {encoded.length}-token input "
                                f"(max_seq_len {self.encoder.max_seq_len}): {type(exc).__name__}") from exc
        want = (1, encoded.length, len(self.labels)) if self.task == Task.TOKEN_CLASSIFICATION else (1, len(self.labels))
        if tuple(logits.shape) != want:
            raise ArtifactError(f"{self.path}: logits of shape {tuple(logits.shape)}, the manifest implies {want} "
                                f"({self.task.value}, {len(self.labels)} labels)")

    def _check_reference(self) -> None:
        """Run the artifact's reference texts (``reference.json``, written at build time) on this
        machine: an INT8 graph quantized for one CPU may compute otherwise on another.

        Raises:
            ArtifactError: the reference file does not match its checksum, or a logit differs from
                the recorded one by more than its tolerance (the message names the model and the
                largest difference).
        """
        record = self.manifest.reference
        if record is None:
            return  # artifacts from before reference outputs were recorded
        ref_path = self.path / record.file
        if not ref_path.is_file() or hashlib.sha256(ref_path.read_bytes()).hexdigest() != record.sha256:
            raise ArtifactError(f"{self.path}: {record.file} is missing or does not match its sha256")
        reference = json.loads(ref_path.read_text())
        worst = max_reference_difference(self.encoder, self.onnx.run, reference)
        if worst > reference["tolerance"]:
            raise ArtifactError(f"model {self.name}: on this machine its reference outputs differ from the build's by "
                                f"{worst:.3g} (tolerance {reference['tolerance']:g}; built on "
                                f"{reference.get('built_on', 'unknown')}); refusing to serve it")
        log.info("model %s: reference outputs match the build's (max |diff| %.2g)", self.name, worst)

    def describe(self) -> dict:
        """``name``, ``task``, ``version`` (first 12 hex digits of the model file's sha256), ``loaded_at``
        (ISO 8601, UTC), ``path`` and the ``manifest``."""
        loaded = datetime.datetime.fromtimestamp(self.loaded_at, datetime.timezone.utc).isoformat(timespec="seconds")
        return {"name": self.name, "task": self.task.value, "version": self.version, "loaded_at": loaded,
                "path": str(self.path), "manifest": self.manifest.to_json()}

    def tokenize(self, texts: list[str], max_tokens: int | None = None) -> list[list[Item]]:
        """The sequences of each text: token classification splits a text longer than
        ``max_seq_len`` into overlapping windows; sequence classification truncates it.

        Raises:
            TooManyTokens: more than ``max_tokens`` in all (checked every ``TOKENIZE_CHUNK`` texts,
                so a huge request is refused before all of it is tokenized).
        """
        out: list[list[Item]] = []
        total, step = 0, len(texts) if max_tokens is None else TOKENIZE_CHUNK
        for at in range(0, len(texts), max(1, step)):
            chunk = texts[at: at + step]
            out += [[Item(t, e) for e in seqs] for t, seqs in zip(chunk, self.plugin.split(self.encoder, chunk))]
            total += sum(item.tokens for windows in out[at:] for item in windows)
            if max_tokens is not None and total > max_tokens:
                raise TooManyTokens(f"more than {max_tokens} tokens (counted {total} in the first {at + len(chunk)} "
                                    f"of {len(texts)} texts)")
        return out

    def infer(self, items: list[Item], alone: bool = False) -> list:
        """Run one padded batch ``[batch, seq_len]``; one partial result per item, in order.
        ``alone``: on the session that uses every core (the service is otherwise idle).

        Token classification: the window's ``list[WindowWord]``; sequence classification: the
        result dict. Padding never changes a result: padded positions are masked in attention
        and ignored in post-processing.
        """
        session = self.onnx_alone if alone else self.onnx
        logits = session.run(pad_batch([i.encoded for i in items], self.encoder.pad_id))
        return [self.plugin.decode(logits[row], i.encoded, self.labels) for row, i in enumerate(items)]

    def assemble(self, text: str, partials: list) -> dict:
        """One text's response fields from the partial results of its sequences.

        Token classification: ``{"entities": [...], "windows": int}``; sequence classification:
        ``{"label", "score", "scores", "truncated"}``.
        """
        return self.plugin.assemble(text, partials, self.labels, self.constrained)

    def assemble_with_confidence(self, text: str, partials: list) -> tuple[dict, float]:
        """:meth:`assemble` and the answer's confidence in [0, 1] (the task plug-in's definition)."""
        return self.plugin.assemble_with_confidence(text, partials, self.labels, self.constrained)


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
        log.info("loaded %s (%s, %d labels) from %s on %s", model.name, model.task.value, len(model.labels), d,
                 model.onnx.providers)
    return models

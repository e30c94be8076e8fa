"""What the compression stages need to know about an encoder architecture, in one place.

An :class:`Adapter` says where an encoder's layers, attention heads and FFN projections live, what
can be pruned (and why not), which ONNX Runtime fusion applies, and which exported ONNX nodes are
the FFN projections and attention-score MatMuls (for the INT8 candidates that keep them fp32).
The default methods describe the BERT layout (``base_model.encoder.layer[i]`` with
``attention.self``, ``intermediate.dense`` and ``output.dense``); families that differ override
them in their own module.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class UnsupportedArchitecture(ValueError):
    """The model's ``config.model_type`` has no adapter (the message lists the supported ones)."""


@dataclass(frozen=True)
class Adapter:
    """One architecture family.

    Attributes:
        family: name shown in manifests and the support matrix.
        model_types: the ``config.model_type`` values it covers.
        fusion: ``onnxruntime.transformers.optimizer`` model type, or None when ONNX Runtime has no
            fusion for this family (``fusion_note`` says why).
        head_pruning_note: None when ``prune_heads`` works and the pruned model still runs,
            otherwise why heads are not pruned.
        ffn_in_nodes / ffn_out_nodes / attention_score_nodes: regular expressions over the
            exported ONNX node names (``torch.onnx`` names nodes by module path).
        lora_targets: module names (suffixes of the module path, as peft matches them) LoRA adapts
            by default: every linear layer of the encoder blocks (attention query, key, value and
            output, both FFN projections), as QLoRA recommends (Dettmers et al. 2023); measured on
            CoNLL-2003, query and value alone (Hu et al. 2021) shipped 2.85 F1 points below full
            fine-tuning, every block linear layer 0.6 (README, LoRA). Task heads are never targets:
            they train fully.
    """

    family: str
    model_types: tuple[str, ...]
    fusion: str | None = "bert"
    fusion_note: str = "ONNX Runtime's transformer optimizer fuses this family (model type 'bert')"
    head_pruning_note: str | None = None
    ffn_in_nodes: tuple[str, ...] = (r"layer\.\d+/intermediate/dense/MatMul",)
    ffn_out_nodes: tuple[str, ...] = (r"layer\.\d+/output/dense/MatMul",)
    attention_score_nodes: tuple[str, ...] = (r"attention/self/MatMul(_\d+)?$",)
    positions_after_padding: bool = False  # RoBERTa: position ids start at pad_token_id + 1
    layers_attr: str = "num_hidden_layers"
    ffn_width_attr: str = "intermediate_size"
    lora_targets: tuple[str, ...] = ("query", "key", "value", "output.dense", "intermediate.dense")

    # -- layers -------------------------------------------------------------------------------
    def encoder(self, model):
        """The module whose ``layer`` attribute is the ``ModuleList`` of layers."""
        return model.base_model.encoder

    def layer_list(self, model) -> torch.nn.ModuleList:
        """The encoder's ``ModuleList`` of layers, in order."""
        return self.encoder(model).layer

    def set_layer_list(self, model, layers) -> None:
        self.encoder(model).layer = layers if isinstance(layers, torch.nn.ModuleList) else torch.nn.ModuleList(layers)

    def layers(self, model) -> list:
        """The layers that own weights (shared-layer families have fewer than they run)."""
        return list(self.layer_list(model))

    def skip_layer(self, model, index: int):
        """Context: run the model without layer ``index`` (for layer-ablation importance)."""
        return _Skip(self, model, index)

    def drop_layers(self, model, indices: list[int]) -> None:
        """Remove layers ``indices`` in place; the config follows so ``from_pretrained`` reloads it."""
        keep = [layer for i, layer in enumerate(self.layer_list(model)) if i not in set(indices)]
        self.set_layer_list(model, keep)
        setattr(model.config, self.layers_attr, len(keep))

    def num_layers(self, model) -> int:
        return getattr(model.config, self.layers_attr)

    # -- attention heads ----------------------------------------------------------------------
    def heads(self, layer) -> int:
        """Attention heads layer ``layer`` has now."""
        return layer.attention.self.num_attention_heads

    def num_heads(self, model) -> int:
        return model.config.num_attention_heads

    @property
    def head_pruning(self) -> bool:
        return self.head_pruning_note is None

    def head_mask_layer(self, model, row: int) -> int:
        """The weight-owning layer that row ``row`` of a ``head_mask`` ``[num_layers, num_heads]`` masks."""
        return row

    def prune_heads(self, model, heads: dict[int, list[int]]) -> None:
        model.prune_heads(heads)

    # -- FFN ----------------------------------------------------------------------------------
    def ffn(self, layer) -> tuple[torch.nn.Linear, torch.nn.Linear]:
        """``(in_projection, out_projection)`` of the layer's feed-forward block."""
        return layer.intermediate.dense, layer.output.dense

    def set_ffn(self, layer, inner: torch.nn.Linear, outer: torch.nn.Linear) -> None:
        layer.intermediate.dense, layer.output.dense = inner, outer

    def set_ffn_width(self, model, width: int) -> None:
        setattr(model.config, self.ffn_width_attr, width)

    def ffn_width(self, model) -> int:
        return getattr(model.config, self.ffn_width_attr)

    # -- embeddings ---------------------------------------------------------------------------
    def type_embedding(self, model) -> torch.nn.Embedding | None:
        """The token-type embedding (carries casing classes), None where the family has none."""
        old = getattr(getattr(model.base_model, "embeddings", None), "token_type_embeddings", None)
        return old if isinstance(old, torch.nn.Embedding) and model.config.type_vocab_size else None

    def set_type_embedding(self, model, embedding: torch.nn.Embedding) -> None:
        model.base_model.embeddings.token_type_embeddings = embedding
        model.config.type_vocab_size = embedding.num_embeddings

    def max_positions(self, config) -> int | None:
        """Longest sequence the position table allows (None when the family has no such limit)."""
        positions = getattr(config, "max_position_embeddings", None)
        if positions and self.positions_after_padding:
            positions -= (config.pad_token_id or 0) + 1
        return positions

    def describe(self) -> dict:
        """What this family supports, for manifests and the support matrix."""
        return {"family": self.family, "head_pruning": self.head_pruning_note or "supported",
                "fusion": self.fusion or "none", "fusion_note": self.fusion_note}


class _Skip:
    def __init__(self, adapter: Adapter, model, index: int) -> None:
        self.adapter, self.model, self.index = adapter, model, index

    def __enter__(self):
        self.saved = self.adapter.layer_list(self.model)
        self.adapter.set_layer_list(self.model, [l for i, l in enumerate(self.saved) if i != self.index])
        return self

    def __exit__(self, *exc) -> None:
        self.adapter.set_layer_list(self.model, self.saved)  # the very ModuleList, restored

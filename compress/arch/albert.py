"""ALBERT: one layer's weights (``albert.encoder.albert_layer_groups[g].albert_layers[i]``, FFN
``ffn`` / ``ffn_output``) are run ``num_hidden_layers`` times. Dropping a layer means one
repetition fewer (all repetitions are the same weights, so which one does not matter); FFN
pruning shrinks the shared layer; heads are not pruned, since a head removed from the shared
layer is removed from every repetition at once, which head importance per repetition does not
measure."""

from __future__ import annotations

from presso.compress.arch.base import Adapter


class AlbertAdapter(Adapter):
    def layers(self, model) -> list:
        return [layer for group in model.base_model.encoder.albert_layer_groups for layer in group.albert_layers]

    def skip_layer(self, model, index: int):
        return _FewerRepetitions(model)

    def drop_layers(self, model, indices: list[int]) -> None:
        model.config.num_hidden_layers = max(1, model.config.num_hidden_layers - len(indices))

    def heads(self, layer) -> int:
        return layer.attention.num_attention_heads

    def ffn(self, layer):
        return layer.ffn, layer.ffn_output

    def set_ffn(self, layer, inner, outer) -> None:
        layer.ffn, layer.ffn_output = inner, outer


class _FewerRepetitions:
    def __init__(self, model) -> None:
        self.config = model.config

    def __enter__(self):
        self.config.num_hidden_layers -= 1
        return self

    def __exit__(self, *exc) -> None:
        self.config.num_hidden_layers += 1


ALBERT = AlbertAdapter(
    family="albert", model_types=("albert",), fusion=None,
    fusion_note="ONNX Runtime's transformer optimizer has no ALBERT model type; the unfused graph is used",
    head_pruning_note="one shared layer runs at every depth: a head pruned there is pruned at every depth",
    ffn_in_nodes=(r"albert_layers\.\d+/ffn/MatMul",), ffn_out_nodes=(r"albert_layers\.\d+/ffn_output/MatMul",),
    attention_score_nodes=(r"albert_layers\.\d+/attention/MatMul(_\d+)?$",),
    lora_targets=("query", "key", "value", "attention.dense", "ffn", "ffn_output"))

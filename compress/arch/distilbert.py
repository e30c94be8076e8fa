"""DistilBERT: ``distilbert.transformer.layer[i]`` with ``attention`` (``n_heads``) and
``ffn.lin1`` / ``ffn.lin2``; no token-type input; config fields ``n_layers`` and ``hidden_dim``."""

from __future__ import annotations

from presso.compress.arch.base import Adapter


class DistilBertAdapter(Adapter):
    def encoder(self, model):
        return model.base_model.transformer

    def heads(self, layer) -> int:
        return layer.attention.n_heads

    def num_heads(self, model) -> int:
        return model.config.n_heads

    def ffn(self, layer):
        return layer.ffn.lin1, layer.ffn.lin2

    def set_ffn(self, layer, inner, outer) -> None:
        layer.ffn.lin1, layer.ffn.lin2 = inner, outer

    def type_embedding(self, model):
        return None


DISTILBERT = DistilBertAdapter(
    family="distilbert", model_types=("distilbert",),
    fusion_note="ONNX Runtime fuses DistilBERT's attention only for some exports; the pipeline keeps the fused "
                "graph only when it matches the unfused one",
    ffn_in_nodes=(r"layer\.\d+/ffn/lin1/MatMul",), ffn_out_nodes=(r"layer\.\d+/ffn/lin2/MatMul",),
    attention_score_nodes=(r"layer\.\d+/attention/MatMul(_\d+)?$",),
    layers_attr="n_layers", ffn_width_attr="hidden_dim", lora_targets=("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"))

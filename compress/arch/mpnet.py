"""MPNet: the BERT layout (``mpnet.encoder.layer[i]``, attention under ``attention.attn``) with a
relative position bias shared by all layers and sized by the original head count, which
``prune_heads`` does not shrink: a pruned model fails at its first forward pass."""

from presso.compress.arch.base import Adapter


class MpnetAdapter(Adapter):
    def heads(self, layer) -> int:
        return layer.attention.attn.num_attention_heads


MPNET = MpnetAdapter(
    family="mpnet", model_types=("mpnet",), fusion=None,
    fusion_note="ONNX Runtime's transformer optimizer has no MPNet fusion (relative position bias); the unfused "
                "graph is used",
    head_pruning_note="the relative position bias keeps the original head count, so a model with pruned heads "
                      "fails at its first forward pass",
    attention_score_nodes=(r"attention/attn/MatMul(_\d+)?$",), lora_targets=("q", "k", "v", "o", "intermediate.dense", "output.dense"))

"""DeBERTa-v2 / v3: the BERT layout (``deberta.encoder.layer[i]``), but transformers does not
implement ``prune_heads`` for it (``NotImplementedError``) and its forward takes no ``head_mask``,
and ONNX Runtime's optimizer has no fusion for its disentangled attention."""

from presso.compress.arch.base import Adapter

DEBERTA_V2 = Adapter(
    family="deberta-v2", model_types=("deberta-v2",), fusion=None,
    fusion_note="ONNX Runtime's transformer optimizer has no fusion for DeBERTa's disentangled attention; "
                "the unfused graph is used",
    head_pruning_note="transformers raises NotImplementedError in DebertaV2Model._prune_heads",
    attention_score_nodes=(r"attention/self/MatMul(_\d+)?$", r"attention/self/.*bmm"),
    lora_targets=("query_proj", "key_proj", "value_proj", "output.dense", "intermediate.dense"))

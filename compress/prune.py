"""Structured pruning of transformer encoders: whole layers, attention heads and FFN intermediate
neurons, so the weight matrices really shrink (unstructured masks give no speed-up on CPU). Where
the parts live, and what an architecture cannot prune, comes from its adapter
(:func:`presso.compress.arch.adapter_for`).

Importance scores, accumulated over training batches:

* Attention heads: expected |dL/d mask_h| of a head mask fixed at 1, normalised per layer by its
  L2 norm (Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?", section 4.1).
* FFN neurons: first-order Taylor score |sum a * dL/da| of each intermediate activation
  (Molchanov et al. 2017, "Pruning Convolutional Neural Networks for Resource Efficient Inference").

* Whole encoder layers (optional, removed first): the rise of the training loss when the layer is
  skipped, one layer at a time (layer ablation as in Sajjad et al. 2022, "On the Effect of Dropping
  Layers of Pre-trained Transformer Models"; the layers whose absence costs least go).

Heads are removed globally by rank (uneven counts per layer, at least one head kept per layer,
recorded in ``config.pruned_heads`` so ``from_pretrained`` reloads the model); FFN neurons are
removed per layer to one common width (``config.intermediate_size`` holds one number).
"""

from __future__ import annotations

import logging
from typing import Iterable

import torch

from presso.compress.arch import adapter_for

log = logging.getLogger(__name__)
LAYER_SCORING_BATCHES = 16  # forward passes only; enough to rank six layers stably


def encoder_layers(model) -> list:
    """The weight-owning encoder layers, in order."""
    return adapter_for(model).layers(model)


def importance_scores(model, batches: Iterable[dict]) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
    """Head and FFN-neuron importance on labelled batches (dicts with ``labels``).

    Returns:
        (head_importance ``[num_layers, num_heads]``, or None where the architecture cannot prune
        heads; ffn_importance: per layer ``[intermediate_size]``).
    """
    adapter = adapter_for(model)
    layers = adapter.layers(model)
    head_mask = None
    if adapter.head_pruning:
        head_mask = torch.ones(adapter.num_layers(model), adapter.num_heads(model), requires_grad=True)
        head_score = torch.zeros_like(head_mask)
    ffn_score = [torch.zeros(adapter.ffn(layer)[0].out_features) for layer in layers]
    hooks = []

    def watch(index: int):
        def pre_hook(_module, inputs):  # the out-projection's input: the FFN's activations
            activation = inputs[0]

            def grad_hook(grad):
                ffn_score[index].add_((activation.detach() * grad).sum(dim=(0, 1)).abs())
            activation.register_hook(grad_hook)
        return pre_hook

    for i, layer in enumerate(layers):
        hooks.append(adapter.ffn(layer)[1].register_forward_pre_hook(watch(i)))
    model.train(False)  # no dropout while scoring
    try:
        for batch in batches:
            out = model(**batch, **({"head_mask": head_mask} if head_mask is not None else {}))
            out.loss.backward()
            if head_mask is not None:
                head_score += head_mask.grad.abs().detach()
                head_mask.grad = None
            model.zero_grad(set_to_none=True)
    finally:
        for h in hooks:
            h.remove()
    if head_mask is None:
        return None, ffn_score
    norm = head_score.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return head_score / norm, ffn_score


def heads_to_prune(head_importance: torch.Tensor, ratio: float) -> dict[int, list[int]]:
    """The ``round(ratio * num_heads_total)`` least important heads, keeping >= 1 head per layer."""
    num_layers, num_heads = head_importance.shape
    budget = round(ratio * num_layers * num_heads)
    chosen: dict[int, list[int]] = {}
    for flat in head_importance.flatten().argsort().tolist():
        if budget == 0:
            break
        layer, head = divmod(flat, num_heads)
        if len(chosen.get(layer, [])) < num_heads - 1:
            chosen.setdefault(layer, []).append(head)
            budget -= 1
    return {layer: sorted(heads) for layer, heads in sorted(chosen.items())}


def prune_ffn(model, ffn_importance: list[torch.Tensor], ratio: float) -> int:
    """Keep the ``(1 - ratio)`` most important intermediate neurons in every layer.

    Returns:
        The new intermediate size (also written to ``model.config.intermediate_size``).
    """
    from transformers.pytorch_utils import prune_linear_layer

    adapter = adapter_for(model)
    width = ffn_importance[0].numel()
    keep = max(1, round(width * (1.0 - ratio)))
    for layer, score in zip(adapter.layers(model), ffn_importance):
        index = score.argsort(descending=True)[:keep].sort().values
        inner, outer = adapter.ffn(layer)
        adapter.set_ffn(layer, prune_linear_layer(inner, index, dim=0), prune_linear_layer(outer, index, dim=1))
    adapter.set_ffn_width(model, keep)
    return keep


def layer_importance(model, batches: Iterable[dict]) -> torch.Tensor:
    """Mean training-loss increase when each encoder layer is skipped alone (``[num_layers]``)."""
    adapter = adapter_for(model)
    batches = list(batches)
    model.train(False)

    def loss() -> float:
        with torch.no_grad():
            return sum(float(model(**b).loss) for b in batches) / max(1, len(batches))

    base = loss()
    scores = []
    for skip in range(adapter.num_layers(model)):
        with adapter.skip_layer(model, skip):
            scores.append(loss() - base)
    return torch.tensor(scores)


def layers_to_drop(importance: torch.Tensor, n: int) -> list[int]:
    """The ``n`` least important layers (``importance``: ``[num_layers]``), sorted; at least one
    layer is kept."""
    n = min(n, importance.shape[0] - 1)
    return sorted(importance.argsort()[:n].tolist()) if n > 0 else []


def drop_layers(model, layers: list[int]) -> None:
    """Remove whole encoder layers in place (config updated so ``from_pretrained`` reloads it)."""
    if layers:
        adapter_for(model).drop_layers(model, layers)


def prune_model(model, batches: Iterable[dict], head_ratio: float, ffn_ratio: float, n_layers: int = 0) -> dict:
    """Score, then remove whole layers (``n_layers`` least important), heads and FFN neurons in place.

    Returns:
        A record of what was removed: ``pruned_heads`` ``{layer: [head, ...]}``, ``heads_per_layer``,
        ``intermediate_size`` before/after, parameter counts before/after.
    """
    adapter = adapter_for(model)
    params_before = sum(p.numel() for p in model.parameters())
    width_before = adapter.ffn_width(model)
    batches = list(batches)
    layer_scores = layer_importance(model, batches[:LAYER_SCORING_BATCHES]) if n_layers else None
    dropped = layers_to_drop(layer_scores, n_layers) if n_layers else []
    drop_layers(model, dropped)  # heads and neurons are then scored in the model that remains
    head_importance, ffn_importance = importance_scores(model, batches)
    heads = heads_to_prune(head_importance, head_ratio) if head_importance is not None else {}
    if heads:
        adapter.prune_heads(model, heads)
    elif head_importance is None and head_ratio > 0:
        log.info("pruning: heads not pruned for %s: %s", adapter.family, adapter.head_pruning_note)
    width_after = prune_ffn(model, ffn_importance, ffn_ratio)
    params_after = sum(p.numel() for p in model.parameters())
    heads_per_layer = [adapter.heads(layer) for layer in adapter.layers(model)]
    log.info("pruned %d heads (per layer now %s), FFN %d -> %d, parameters %d -> %d",
             sum(len(v) for v in heads.values()), heads_per_layer, width_before, width_after,
             params_before, params_after)
    return {
        "method": "layer ablation loss (Sajjad et al. 2022) + head importance (Michel et al. 2019) + FFN "
                  "first-order Taylor (Molchanov et al. 2017)",
        "architecture": adapter.describe(),
        "heads_skipped_because": None if head_importance is not None else adapter.head_pruning_note,
        "layers_dropped": dropped,
        "layer_importance_loss_increase": None if layer_scores is None else [round(float(x), 5) for x in layer_scores],
        "head_ratio": head_ratio,
        "ffn_ratio": ffn_ratio,
        "pruned_heads": {str(k): v for k, v in heads.items()},
        "heads_per_layer": heads_per_layer,
        "intermediate_size": {"before": width_before, "after": width_after},
        "parameters": {"before": params_before, "after": params_after},
    }

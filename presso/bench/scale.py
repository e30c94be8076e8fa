"""The scale section of ``presso bench model``: what the pipeline's compression buys on full-size
encoders, measured on random-weight models shaped like BERT-base (12 x 768, 12 heads, FFN 3072)
and DeBERTa-v3-small (6 x 768, 12 heads, FFN 3072, relative attention, 128k vocabulary).

Speed does not depend on the weights' values, so no download is needed: each model is built from
its transformers config, pruned with the default profile's ratios by the pipeline's own
:func:`presso.compress.prune.prune_model` (importance from synthetic batches: which heads and
neurons go changes nothing about the cost, how many does), exported, and quantized to three of the
pipeline's INT8 candidates: ``static`` (every MatMul INT8 but the classifier head: the fastest, and
what the build ships when it keeps accuracy), ``static_ffn_fp32`` (the FFN kept fp32, what the
full-profile NER build shipped) and dynamic per-channel INT8. Accuracy is
not measured here (random weights); the per-task sections measure it on real data.

The speed-up is the median of alternating rounds at 8 x 128 (:func:`presso.bench.model.paired_speedup`),
PyTorch fp32 eager (unpruned) against each ONNX Runtime variant, every core on both sides.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SCALE_MODELS = ("bert-base", "deberta-v3-small")
NUM_LABELS = 9  # CoNLL-2003's IOB2 tags


def scale_config(name: str):
    """The transformers config of a :data:`SCALE_MODELS` shape (values as published with the models)."""
    import transformers as t

    if name == "bert-base":
        return t.BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, max_position_embeddings=512, num_labels=NUM_LABELS)
    if name == "deberta-v3-small":
        return t.DebertaV2Config(vocab_size=128100, hidden_size=768, num_hidden_layers=6, num_attention_heads=12,
                                 intermediate_size=3072, max_position_embeddings=512, relative_attention=True,
                                 position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
                                 pos_att_type=["p2c", "c2p"], position_biased_input=False,
                                 max_relative_positions=-1, type_vocab_size=0, num_labels=NUM_LABELS)
    raise ValueError(f"unknown scale model {name!r}; one of {SCALE_MODELS}")


def _batches(n: int, batch: int, seq_len: int, vocab: int, seed: int) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1000, min(vocab, 20000), (batch, seq_len), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                    "labels": torch.randint(0, NUM_LABELS, (batch, seq_len), generator=g)})
    return out


def measure_scale_model(name: str, runs: int, work: Path, rounds: int = 5) -> dict:
    """One full-size shape: PyTorch fp32 vs the pruned ONNX Runtime fp32 and INT8 graphs at 8 x 128.

    Returns:
        ``{"config", "pruning", "variants": {variant: {"size_bytes", "p50_ms_8x128", ...}},
        "speedup_vs_torch_fp32_8x128": {variant: paired median}}``.
    """
    import torch
    import transformers

    from presso.bench.paired import paired_speedup
    from presso.compress.arch import adapter_for
    from presso.compress.evaluate import fixed_shape_latency_ms
    from presso.compress.export import export_onnx
    from presso.compress.profiles import PROFILES
    from presso.compress.prune import prune_model
    from presso.compress.quantize import HEAD_NODES, quantize_dynamic, quantize_static
    from presso.compress.train import as_numpy_logits
    from presso.core.runtime import OnnxModel

    profile = PROFILES["default"]
    torch.manual_seed(0)
    config = scale_config(name)
    model = transformers.AutoModelForTokenClassification.from_config(config).eval()
    adapter = adapter_for(model)
    baseline = copy.deepcopy(model).eval()
    params_before = sum(p.numel() for p in model.parameters())
    shape = {"model_type": config.model_type, "layers": config.num_hidden_layers, "hidden": config.hidden_size,
             "heads": config.num_attention_heads, "ffn": config.intermediate_size, "vocab": config.vocab_size,
             "parameters": params_before}  # before pruning changes the config in place
    t0 = time.perf_counter()
    record = prune_model(model, _batches(4, 8, 128, config.vocab_size, 0), profile.prune_heads_ratio,
                         profile.prune_ffn_ratio, profile.prune_layers)
    model.eval()
    prune_s = time.perf_counter() - t0
    onnx_fp32 = export_onnx(model, "ner", work / f"{name}-pruned-fp32.onnx")
    calibration = [{k: v.numpy() for k, v in b.items() if k != "labels"} | {"token_type_ids": np.zeros((8, 128), np.int64)}
                   for b in _batches(4, 8, 128, config.vocab_size, 1)]
    graphs = {"onnx_pruned_fp32": onnx_fp32}
    ffn = adapter.ffn_out_nodes + adapter.ffn_in_nodes
    for variant, exclude in (("static", HEAD_NODES), ("static_ffn_fp32", HEAD_NODES + ffn)):
        quantize_static(onnx_fp32, work / f"{name}-{variant}.onnx", calibration, exclude_patterns=exclude)
        graphs[f"pruned_int8_{variant}"] = work / f"{name}-{variant}.onnx"
    quantize_dynamic(onnx_fp32, work / f"{name}-dynamic_per_channel.onnx", per_channel=True)
    graphs["pruned_int8_dynamic_per_channel"] = work / f"{name}-dynamic_per_channel.onnx"

    torch_run = as_numpy_logits(baseline)
    variants = {"pytorch_fp32": {"size_bytes": sum(p.numel() * p.element_size() for p in baseline.parameters()),
                                 **_latency(fixed_shape_latency_ms(torch_run, 8, 128, runs))}}
    speedups = {}
    for variant, path in graphs.items():
        run = OnnxModel(path).run
        variants[variant] = {"size_bytes": path.stat().st_size, **_latency(fixed_shape_latency_ms(run, 8, 128, runs))}
        speedups[variant] = paired_speedup(torch_run, run, runs, rounds=rounds)
        log.info("scale %s %s: %.1f ms at 8x128, %.2fx PyTorch fp32", name, variant,
                 variants[variant]["p50_ms_8x128"], speedups[variant]["median"])
    return {"config": shape,
            "pruning": {"profile": profile.name, "head_ratio": profile.prune_heads_ratio,
                        "ffn_ratio": profile.prune_ffn_ratio, "layers_dropped": record["layers_dropped"],
                        "heads_skipped_because": record["heads_skipped_because"],
                        "intermediate_size": record["intermediate_size"],
                        "parameters_after": sum(p.numel() for p in model.parameters()), "seconds": round(prune_s, 1)},
            "variants": variants,
            "speedup_vs_torch_fp32_8x128": {v: s["median"] for v, s in speedups.items()},
            "paired_rounds": speedups}


def _latency(record: dict) -> dict:
    return {"p50_ms_8x128": record["p50_ms"], "p95_ms_8x128": record["p95_ms"], "seq_per_s_8x128": record["seq_per_s"]}


def run_scale(runs: int = 10, models: tuple[str, ...] = SCALE_MODELS) -> dict:
    """Every :data:`SCALE_MODELS` shape; the ``scale`` section of ``model-bench.json``."""
    import os
    import platform

    from presso.compress.quantize import choose_preset

    out = {"what": "random-weight full-size shapes; default-profile pruning, then INT8; speed only, at 8 x 128",
           "runs_per_measurement": runs, "setup": {"cores": os.cpu_count(), "machine": platform.machine(),
                                                   "int8_preset": choose_preset()}, "models": {}}
    with tempfile.TemporaryDirectory(prefix="presso-scale-") as tmp:
        for name in models:
            out["models"][name] = measure_scale_model(name, runs, Path(tmp))
    return out


def markdown(scale: dict) -> str:
    lines = ["### scale: full-size shapes, random weights (speed only)", "",
             "| model | variant | size MB | 8x128 p50 ms | 8x128 seq/s | speed-up vs PyTorch fp32 |",
             "|---|---|---|---|---|---|"]
    for name, m in scale["models"].items():
        for variant, v in m["variants"].items():
            speedup = m["speedup_vs_torch_fp32_8x128"].get(variant, 1.0)
            lines.append(f"| {name} | {variant} | {v['size_bytes'] / 1e6:.1f} | {v['p50_ms_8x128']:.1f} | "
                         f"{v['seq_per_s_8x128']:.0f} | {speedup:.2f} |")
    return "\n".join(lines) + "\n"

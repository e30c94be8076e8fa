"""INT8 quantization with ONNX Runtime: dynamic (``onnxruntime.quantization.quantize_dynamic``) or
static QDQ (``onnxruntime.quantization.quantize_static`` with calibration on training data), and
the transformer graph optimizer that fuses a model before dynamic quantization.

Dynamic quantization computes each activation's scale from the whole batch tensor at run time,
so a text's logits depend on its batch-mates (measured on CoNLL-2003: about 5% of sentences
changed entities between batch-of-32 and single requests). Static quantization fixes every scale
at calibration time, so a text's result does not depend on its batch; it is the default.

The configuration follows the CPU's instruction set: with VNNI (``avx512_vnni`` / ``avx_vnni``)
u8/s8 dot products are exact; on plain AVX2 / AVX-512 the weights use 7 bits
(``reduce_range``) to avoid the known u8*s8 overflow of ``vpmaddubsw``
(ONNX Runtime quantization docs, "When and why do I need to try U8U8?"); arm64 has its own preset.
"""

from __future__ import annotations

import logging
import platform
import re
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)


# Nodes kept in fp32 by every static variant (see compress.choose): the classification head and
# pooler (their outputs feed the argmax directly; the pooler is one [CLS] vector per text). The
# other candidates also keep an architecture's FFN projections or attention-score MatMuls fp32;
# their node patterns come from its adapter (compress.arch). Measured (same runs, 2 cores): on the
# default CoNLL-2003 model keeping the FFN output projections fp32 changed test F1 only
# 0.8310 -> 0.8318 for a 29% larger file and 20% slower batches; on a weakly trained tweet model it
# recovered accuracy 0.664 -> 0.685 (fp32 0.683): post-GELU activations have outliers that one
# fixed u8 scale clips.
HEAD_NODES = (r"classifier", r"pooler")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def choose_preset(flags: set[str] | None = None, machine: str | None = None) -> str:
    """Name of the ``AutoQuantizationConfig`` preset for this CPU."""
    machine = machine or platform.machine()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def quantize_dynamic(model_path: Path, output: Path, per_channel: bool = False, preset: str | None = None) -> dict:
    """Write a dynamically quantized INT8 copy of ``model_path`` to ``output`` with
    ``onnxruntime.quantization.quantize_dynamic`` (s8 weights, u8 activations quantized per batch at
    run time). Works on fused graphs (``Attention`` -> ``QAttention``); tensors that shape inference
    cannot type are taken as fp32 (``DefaultTensorType``).

    Returns:
        The settings used: preset, why, per-channel, reduce_range, operators quantized.
    """
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    preset = preset or choose_preset()
    note = _x86_weights_note(preset)
    ort_quantize_dynamic(str(model_path), str(output), per_channel=per_channel, reduce_range=note["reduce_range"],
                         weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})
    ops = sorted({n.op_type for n in onnx.load(str(output), load_external_data=False).graph.node
                  if n.op_type.startswith(("DynamicQuantize", "MatMulInteger", "QAttention", "QGemm"))})
    settings = {
        "method": "dynamic",
        "preset": preset,
        **note,
        "per_channel": per_channel,
        "weights_dtype": "QInt8",
        "activations_dtype": "QUInt8 (scale per batch, at run time)",
        "quantized_operator_types": ops,
        "library": "onnxruntime.quantization.quantize_dynamic",
    }
    log.info("quantized %s -> %s (%s)", model_path, output, settings)
    return settings


def _x86_weights_note(preset: str) -> dict:
    reduce_range = preset in ("avx2", "avx512")
    return {"reduce_range": reduce_range,
            "chosen_because": f"CPU {platform.machine()} flags: " + ", ".join(
                sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})) or "none"}


def quantize_static(model_path: Path, output: Path, calibration: Iterable[dict[str, np.ndarray]],
                    preset: str | None = None, per_channel: bool = True,
                    exclude_patterns: tuple[str, ...] = HEAD_NODES, op_types: tuple[str, ...] = ("MatMul", "Gather"),
                    method: str = "MinMax", percentile: float = 99.999) -> dict:
    """Static INT8 in QDQ format: u8 activations, s8 per-channel weights, scales from ``calibration``.

    Args:
        calibration: unpadded batches (padding positions would widen the ranges) of int64 arrays
            ``[batch, seq_len]`` named like the model's inputs; extra keys are ignored.
        exclude_patterns: regular expressions; matching nodes stay fp32 (see :mod:`presso.compress.choose`).
        method: ``MinMax``, ``Entropy`` or ``Percentile`` (ONNX Runtime calibrators); the
            histogram methods need every batch padded to one shape.
        percentile: the percentile kept by ``Percentile`` calibration.

    Returns:
        The settings used, including the excluded nodes.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static as ort_quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    preset = preset or choose_preset()
    graph = onnx.load(str(model_path)).graph
    input_names = [i.name for i in graph.input]
    excluded = sorted(n.name for n in graph.node if any(re.search(p, n.name) for p in exclude_patterns))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {k: batch[k] for k in input_names}

    note = _x86_weights_note(preset)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Symbolic shape inference fails on these exports; ONNX shape inference suffices.
        quant_pre_process(str(model_path), str(pre), skip_symbolic_shape=True)
        ort_quantize_static(
            str(pre), str(output), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(op_types),
            per_channel=per_channel, reduce_range=note["reduce_range"], activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=excluded, calibrate_method=getattr(CalibrationMethod, method),
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "CalibPercentile": percentile},
        )
    settings = {
        "method": "static",
        "format": "QDQ",
        "preset": preset,
        **note,
        "per_channel": per_channel,
        "weights_dtype": "QInt8",
        "activations_dtype": "QUInt8",
        "calibration_method": method,
        **({"calibration_percentile": percentile} if method == "Percentile" else {}),
        "operators_to_quantize": list(op_types),
        "nodes_kept_fp32": excluded,
        "library": "onnxruntime.quantization.quantize_static",
    }
    log.info("static-quantized %s -> %s (%s)", model_path, output, settings)
    return settings


def optimize_graph(model_path: Path, output: Path, model_type: str = "bert") -> dict:
    """Offline ONNX Runtime transformer optimizer (``onnxruntime.transformers.optimizer``; the
    ``model_type`` comes from the architecture's adapter): fuses attention, LayerNorm with its
    residual add, GELU and bias adds. Head counts are detected per attention block, so pruned
    models with uneven heads fuse too; callers check parity against the unfused graph.

    Returns:
        ``{"library", "fused_operators": {op: count}}``.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(model_path), model_type=model_type, num_heads=0, hidden_size=0)
    optimized.save_model_to_file(str(output))
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    log.info("optimized %s -> %s: %s", model_path, output, fused)
    return {"library": "onnxruntime.transformers.optimizer", "model_type": model_type, "fused_operators": fused}

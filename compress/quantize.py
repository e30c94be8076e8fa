"""INT8 dynamic quantization with ONNX Runtime through optimum's ``ORTQuantizer``.

The configuration follows the CPU's instruction set: with VNNI (``avx512_vnni`` / ``avx_vnni``)
u8/s8 dot products are exact; on plain AVX2 / AVX-512 the weights use 7 bits
(``reduce_range``) to avoid the known u8*s8 overflow of ``vpmaddubsw``
(ONNX Runtime quantization docs, "When and why do I need to try U8U8?"); arm64 has its own preset.
"""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


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
    """Write a dynamically quantized INT8 copy of ``model_path`` to ``output``.

    Returns:
        The settings used: preset, why, per-channel, operators quantized, reduce_range.
    """
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    preset = preset or choose_preset()
    qconfig = getattr(AutoQuantizationConfig, preset)(is_static=False, per_channel=per_channel)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        shutil.copy(model_path, src / "model.onnx")
        quantizer = ORTQuantizer.from_pretrained(src, file_name="model.onnx")
        quantizer.quantize(quantization_config=qconfig, save_dir=Path(tmp) / "out")
        shutil.move(str(Path(tmp) / "out" / "model_quantized.onnx"), output)
    settings = {
        "method": "dynamic",
        "preset": preset,
        "chosen_because": f"CPU {platform.machine()} flags: "
                          + ", ".join(sorted(cpu_flags() & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"})),
        "per_channel": qconfig.per_channel,
        "reduce_range": qconfig.reduce_range,
        "weights_dtype": str(qconfig.weights_dtype.name),
        "activations_dtype": str(qconfig.activations_dtype.name),
        "operators_to_quantize": list(qconfig.operators_to_quantize),
        "library": "optimum.onnxruntime.ORTQuantizer",
    }
    log.info("quantized %s -> %s (%s)", model_path, output, settings)
    return settings

"""Compute layer: ONNX Runtime inference sessions.

Exactly one of the ``onnxruntime`` (CPU) and ``onnxruntime-gpu`` distributions may be installed:
both provide the same ``onnxruntime`` module and the last one installed silently wins.
"""

from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


class RuntimeSetupError(RuntimeError):
    """The ONNX Runtime installation or a model file cannot be used."""


def onnxruntime_distribution() -> str:
    """Name of the one installed ONNX Runtime distribution.

    Raises:
        RuntimeSetupError: none or both of ``onnxruntime`` and ``onnxruntime-gpu`` are installed.
    """
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
            found.append(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    if len(found) != 1:
        raise RuntimeSetupError(
            f"exactly one of {ORT_DISTRIBUTIONS} must be installed, found {found or 'none'}; "
            "install presso[cpu] or presso[gpu], never both"
        )
    return found[0]


def select_providers(distribution: str) -> list[str]:
    """CUDA first when the gpu distribution is installed and a GPU is visible, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    log.info("onnxruntime %s (%s), available providers: %s", ort.__version__, distribution, available)
    if distribution == "onnxruntime-gpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel:
    """An encoder with a classification head as an ONNX Runtime session.

    Args:
        path: ``model.onnx`` with inputs ``input_ids``, ``attention_mask`` (and optionally
            ``token_type_ids``), int64 ``[batch, sequence]``, and output ``logits``.
        providers: execution providers in priority order.
        intra_op_threads: threads per operator; 0 lets ONNX Runtime choose.
        spinning: let idle intra-op threads busy-wait for the next operator (ONNX Runtime's default,
            ``session.intra_op.allow_spinning``); off, they sleep and leave the cores to the event loop.

    Raises:
        RuntimeSetupError: the file cannot be loaded or lacks the expected inputs/outputs.
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, intra_op_threads: int = 0,
                 spinning: bool = True) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RuntimeSetupError(f"cannot load ONNX model {path}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        missing = {"input_ids", "attention_mask"} - set(self.input_names)
        if missing or "logits" not in outputs:
            raise RuntimeSetupError(f"{path}: needs inputs input_ids, attention_mask and output logits; "
                                    f"has inputs {self.input_names}, outputs {outputs}")
        self.providers = self.session.get_providers()

    def run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Logits for a padded batch.

        Args:
            batch: int64 arrays ``[batch, seq_len]`` named as the model's inputs (extra keys ignored).

        Returns:
            float32 logits ``[batch, seq_len, num_labels]`` (token classification) or
            ``[batch, num_labels]`` (sequence classification).
        """
        feeds = {name: batch[name] for name in self.input_names}
        return self.session.run(["logits"], feeds)[0]

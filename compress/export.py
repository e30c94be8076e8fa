"""ONNX export with optimum's exporter, then a parity check against PyTorch on real inputs.

The parity check follows optimum's ``validate_model_outputs``: same inputs through both models,
a typed error when shapes or values disagree beyond the tolerance.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

EXPORT_TASKS = {"ner": "token-classification", "classify": "text-classification"}


class ExportParityError(RuntimeError):
    """The exported ONNX model's logits differ from PyTorch's beyond the tolerance."""


def export_onnx(model, task: str, output: Path, opset: int = 17) -> Path:
    """Export ``model`` to ``output`` (a ``.onnx`` file) with dynamic ``batch`` and ``sequence`` axes."""
    from optimum.exporters.onnx import onnx_export_from_model

    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_export_from_model(model, tmp, opset=opset, task=EXPORT_TASKS[task], do_validation=False)
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(tmp) / "model.onnx"), output)
    log.info("exported %s (%d bytes)", output, output.stat().st_size)
    return output


def check_parity(reference: Callable[[dict], np.ndarray], candidate: Callable[[dict], np.ndarray],
                 batches: list[dict[str, np.ndarray]], atol: float) -> float:
    """Max |logit difference| over the real tokens of ``batches`` (padding positions excluded).

    Raises:
        ExportParityError: shapes differ or the difference exceeds ``atol``.
    """
    worst = 0.0
    for batch in batches:
        ref, got = reference(batch), candidate(batch)
        if ref.shape != got.shape:
            raise ExportParityError(f"logits shape {got.shape} != reference {ref.shape}")
        diff = np.abs(ref - got)
        if diff.ndim == 3:  # token classification: only real tokens count
            diff = diff[batch["attention_mask"].astype(bool)]
        worst = max(worst, float(diff.max()))
    if worst > atol:
        raise ExportParityError(f"max |logit diff| {worst:.3g} exceeds tolerance {atol:g}")
    return worst

"""Reference outputs of an artifact (``reference.json``): a few texts and the logits the build
computed for each, re-run where the model is served. An INT8 graph quantized for one CPU (e.g.
with VNNI) can compute otherwise on another; the service refuses such a model."""

from __future__ import annotations

from typing import Callable

import numpy as np

from presso.core.encoding import TextEncoder, pad_batch

REFERENCE_TOLERANCE = 0.01  # logits; the same graph on two CPUs differs by ~1e-5, a quantization mismatch by >0.1

Run = Callable[[dict[str, np.ndarray]], np.ndarray]


def reference_outputs(encoder: TextEncoder, run: Run, texts: list[str], built_on: str) -> dict:
    """``reference.json`` of an artifact: ``texts`` and the logits ``run`` gives each one alone
    (``[seq_len, num_labels]`` or ``[num_labels]``), the tolerance and the build machine."""
    logits = [run(pad_batch([e], encoder.pad_id))[0].round(5).tolist() for e in encoder.encode(texts)]
    return {"texts": texts, "logits": logits, "tolerance": REFERENCE_TOLERANCE, "built_on": built_on}


def max_reference_difference(encoder: TextEncoder, run: Run, reference: dict) -> float:
    """Largest |logit difference| between ``run`` now and the recorded reference outputs
    (``inf`` when a shape differs)."""
    worst = 0.0
    for encoded, want in zip(encoder.encode(reference["texts"]), reference["logits"]):
        got = run(pad_batch([encoded], encoder.pad_id))[0]
        want = np.asarray(want, dtype=np.float32)
        if got.shape != want.shape:
            return float("inf")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst

"""Batch invariance through the real scheduler on a real (tiny, random) BERT with attention:
for any mix of texts, lengths and arrival orders, each text's spans equal its single-request
result, and every batched row's fp32 logits equal the text alone within 1e-4."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("optimum")

from presso.compress.export import export_onnx  # noqa: E402
from presso.service.batching import BatchLimits, DynamicBatcher  # noqa: E402
from presso.core.encoding import pad_batch  # noqa: E402
from presso.service.registry import LoadedModel  # noqa: E402
from tests.fakes import NER_LABELS, WORDS, write_tokenizer  # noqa: E402
from tests.fakes import tiny_bert as random_tiny_bert  # noqa: E402

MAX_SEQ_LEN = 16  # small, so long texts become several windows


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> LoadedModel:
    model = random_tiny_bert(num_hidden_layers=2)
    d = tmp_path_factory.mktemp("tiny-bert")
    write_tokenizer(d / "tokenizer.json")
    export_onnx(model, "ner", d / "model.onnx")
    manifest = {"name": "tiny", "task": "token-classification", "labels": NER_LABELS, "max_seq_len": MAX_SEQ_LEN,
                "model_file": "model.onnx",
                "model_sha256": hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest()}
    (d / "manifest.json").write_text(json.dumps(manifest))
    return LoadedModel(d, ["CPUExecutionProvider"], intra_op_threads=1, stride_tokens=4)


texts_strategy = st.lists(st.lists(st.sampled_from([w for w in WORDS if not w.startswith("##")]), max_size=30)
                          .map(" ".join), min_size=1, max_size=10)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=texts_strategy, delays_ms=st.lists(st.sampled_from([0.0, 0.3, 1.0]), min_size=10, max_size=10),
       max_batch_size=st.integers(1, 8), sort_window=st.integers(1, 8), workers=st.integers(1, 2))
def test_results_do_not_depend_on_batching(tiny_bert, texts, delays_ms, max_batch_size, sort_window, workers):
    model = tiny_bert
    alone = [model.assemble(t, [model.infer([window])[0] for window in windows])  # every sequence alone
             for t, windows in zip(texts, model.tokenize(texts))]
    batches: list[list] = []
    lock = threading.Lock()

    def recording_infer(items):
        with lock:
            batches.append(list(items))
        return model.infer(items)

    async def scenario():
        limits = BatchLimits(max_batch_size=max_batch_size, max_batch_tokens=10_000, sort_window=sort_window)
        batcher = DynamicBatcher("tiny", recording_infer, limits, cost=lambda i: i.tokens, workers=workers)
        batcher.start()

        async def request(i, text):
            await asyncio.sleep(delays_ms[i] / 1000)
            windows = model.tokenize([text])[0]
            return model.assemble(text, await batcher.submit(windows))

        try:
            return await asyncio.gather(*(request(i, t) for i, t in enumerate(texts)))
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == alone
    for batch in batches:
        logits = model.onnx.run(pad_batch([i.encoded for i in batch], model.encoder.pad_id))
        for row, item in enumerate(batch):
            single = model.onnx.run(pad_batch([item.encoded], model.encoder.pad_id))[0]
            assert np.abs(logits[row, : item.tokens] - single).max() < 1e-4

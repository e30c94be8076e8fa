"""Stage evaluation: the same code measures every stage (PyTorch fp32, pruned, ONNX fp32, INT8).

A stage is a ``logits_fn``: int64 batch ``[batch, seq_len]`` arrays -> float32 logits. Inputs are
tokenized once with the artifact's ``tokenizer.json`` (:class:`presso.core.encoding.TextEncoder`) and
NER words are decoded with the service's own post-processing (:mod:`presso.core.spans`).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import numpy as np

from presso.compress.data import Splits
from presso.compress.metrics import classification_metrics, ner_metrics
from presso.core.encoding import TextEncoder, pad_batch
from presso.core.spans import word_predictions

LogitsFn = Callable[[dict[str, np.ndarray]], np.ndarray]
EVAL_BATCH = 64


class TestSet:
    """Test examples tokenized once, plus fixed latency inputs (real test texts, batch 1 and 8)."""

    def __init__(self, splits: Splits, encoder: TextEncoder, examples: Sequence) -> None:
        self.task, self.labels, self.examples = splits.task, splits.labels, list(examples)
        if self.task == "ner":
            self.encoded = encoder.encode_words([ex.tokens for ex in self.examples])
            self.gold = [ex.tags for ex in self.examples]
        else:
            self.encoded = encoder.encode([ex.text for ex in self.examples])
            self.gold = [ex.label for ex in self.examples]
        self.pad_id = encoder.pad_id
        # Batches of similar length (sorted), so evaluation does not pay for padding.
        order = sorted(range(len(self.encoded)), key=lambda i: self.encoded[i].length)
        self.batches = [order[i: i + EVAL_BATCH] for i in range(0, len(order), EVAL_BATCH)]

    def padded(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        return pad_batch([self.encoded[i] for i in indices], self.pad_id)

    def sample_batches(self, n: int = 4) -> list[dict[str, np.ndarray]]:
        """A few real padded batches of mixed length (for parity checks)."""
        step = max(1, len(self.encoded) // (n * 8))
        return [self.padded(list(range(k * 8 * step, (k + 1) * 8 * step, step))[:8]) for k in range(n)
                if (k + 1) * 8 * step <= len(self.encoded)] or [self.padded(range(min(8, len(self.encoded))))]

    def predict(self, logits_fn: LogitsFn) -> list:
        """Per example: the IOB2 tag of every word (NER, decoded as the service does) or the label
        (classification)."""
        return self.predict_decodings(logits_fn, (True,))[0]

    def predict_decodings(self, logits_fn: LogitsFn, decodings: Sequence[bool]) -> list[list]:
        """:meth:`predict` once per entry of ``decodings`` (NER: ``True`` = IOB2 Viterbi, ``False`` =
        argmax per word) from one pass of ``logits_fn``."""
        preds: list[list] = [[None] * len(self.encoded) for _ in decodings]
        from tqdm.auto import tqdm

        for idx in tqdm(self.batches, desc="evaluate", unit="batch", leave=False):
            logits = logits_fn(self.padded(idx))
            for row, i in enumerate(idx):
                for out, constrained in zip(preds, decodings):
                    out[i] = self.decode(logits[row], i, constrained)
        return preds

    def predict_alone(self, logits_fn: LogitsFn, i: int):
        """Example ``i``'s prediction when run as a batch of one."""
        return self.decode(logits_fn(self.padded([i]))[0], i)

    def decode(self, logits: np.ndarray, i: int, constrained: bool = True):
        """Example ``i``'s prediction from its logits (``[seq_len, num_labels]`` or ``[num_labels]``)."""
        enc, gold = self.encoded[i], self.gold[i]
        if self.task != "ner":
            return self.labels[int(logits.argmax())]
        tags = [w.tag for w in word_predictions(logits, enc.word_ids, enc.offsets, self.labels, constrained)]
        return tags + ["O"] * (len(gold) - len(tags))  # words cut off by truncation count as O

    def metrics(self, preds: list) -> dict:
        if self.task == "ner":
            return ner_metrics(self.gold, preds)
        return classification_metrics(self.gold, preds)


def agreement(a: list, b: list) -> float:
    """Fraction of equal predictions: per word (NER, flattened) or per text (classification)."""
    flat_a = [x for seq in a for x in seq] if a and isinstance(a[0], list) else a
    flat_b = [x for seq in b for x in seq] if b and isinstance(b[0], list) else b
    return round(sum(x == y for x, y in zip(flat_a, flat_b)) / max(1, len(flat_a)), 5)


def _timed_ms(logits_fn: LogitsFn, batch: dict[str, np.ndarray], runs: int) -> tuple[float, float]:
    """(p50, p95) milliseconds of ``runs`` calls of ``logits_fn(batch)`` after one warm-up call."""
    logits_fn(batch)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        logits_fn(batch)
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def latency_ms(logits_fn: LogitsFn, test: TestSet, batch_size: int, runs: int) -> dict:
    """p50/p95 wall time of one ``logits_fn`` call on real test texts, tokenization excluded."""
    batch = test.padded(range(min(batch_size, len(test.encoded))))
    p50, p95 = _timed_ms(logits_fn, batch, runs)
    return {"p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "seq_len": int(batch["input_ids"].shape[1])}


def fixed_shape_latency_ms(logits_fn: LogitsFn, batch_size: int, seq_len: int, runs: int = 10) -> dict:
    """p50/p95 wall time of ``logits_fn`` on int64 inputs ``[batch_size, seq_len]`` of ordinary
    tokens, and sequences per second at the p50."""
    ids = np.ones((batch_size, seq_len), dtype=np.int64)  # the token ids do not change the cost
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    p50, p95 = _timed_ms(logits_fn, feeds, runs)
    return {"p50_ms": round(p50, 3), "p95_ms": round(p95, 3), "seq_per_s": round(batch_size / (p50 / 1000.0), 1)}


def batch_invariance(logits_fn: LogitsFn, test: TestSet, preds: list, n: int) -> float:
    """Fraction of the first ``n`` test examples whose prediction alone (batch of 1) equals their
    prediction inside a length-sorted batch of ``EVAL_BATCH``."""
    n = min(n, len(test.encoded))
    same = sum(test.predict_alone(logits_fn, i) == preds[i] for i in range(n))
    return round(same / max(1, n), 5)


def evaluate_stage(name: str, runtime: str, logits_fn: LogitsFn, test: TestSet, size_bytes: int,
                   latency_runs: int, invariance_examples: int = 0) -> tuple[dict, list]:
    """Metrics (NER: Viterbi-decoded, plus ``metrics_argmax_decoding``), file size, latency and (if
    ``invariance_examples``) batch invariance of one stage; also returns its predictions."""
    t0 = time.perf_counter()
    preds, *argmax = test.predict_decodings(logits_fn, (True, False) if test.task == "ner" else (True,))
    eval_s = time.perf_counter() - t0
    record = {
        "stage": name,
        "runtime": runtime,
        "metrics": test.metrics(preds),
        "size_bytes": size_bytes,
        "latency_ms": {f"batch_{b}": latency_ms(logits_fn, test, b, latency_runs) for b in (1, 8)},
        "test_examples": len(test.encoded),
        "eval_s": round(eval_s, 2),
    }
    if argmax:  # NER: the same logits decoded word by word, without the IOB2 constraint
        record["metrics_argmax_decoding"] = test.metrics(argmax[0])
    if invariance_examples:
        record["batch_invariance"] = {"examples": min(invariance_examples, len(test.encoded)),
                                      "same_prediction_alone_and_batched": batch_invariance(
                                          logits_fn, test, preds, invariance_examples)}
    return record, preds

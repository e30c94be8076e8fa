"""Training budgets. ``default`` fits both built-in models in about 20 minutes on a 2-core CPU;
``full`` (about 45 minutes there) trains NER longer and sentiment on all its data, with longer
recovery after pruning; ``smoke`` is the end-to-end test's few-minute budget."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Profile(BaseModel):
    name: str
    epochs: dict[str, float] = Field(description="fine-tuning epochs per task ('ner', 'classify') over the "
                                     "(possibly capped) training set")
    max_train_examples: dict[str, int] = Field(
        default_factory=dict, description="cap on training examples per task ('ner', 'classify'); absent = all")
    max_eval_examples: int | None = Field(None, description="cap on validation/test examples; None = all")
    learning_rate: float = 1e-4
    batch_size: int = 32
    eval_steps: int = 200
    early_stopping_patience: int = 2
    max_seq_len: int = 128
    label_continuations: bool = Field(True, description="NER: train later sub-tokens of a word as inside "
                                      "its entity (see compress.train)")
    prune_heads_ratio: float = Field(0.25, description="fraction of all attention heads removed")
    prune_ffn_ratio: float = Field(0.5, description="fraction of FFN intermediate neurons removed per layer")
    importance_batches: int = 40
    quantization: str = Field("static", pattern="^(static|dynamic)$",
                              description="INT8 mode: static QDQ (batch-invariant) or dynamic")
    int8_max_drop_points: float = Field(0.5, description="static INT8: the first (fastest) candidate within this "
                                        "many points of fp32 ONNX on validation is chosen")
    selection_examples: int = Field(1000, description="validation examples used to choose the INT8 candidate")
    calibration_examples: int = Field(256, description="training texts for static calibration (batch 1, unpadded)")
    invariance_examples: int = Field(500, description="test texts re-run alone to measure batch invariance")
    recovery_epochs: float = 0.3
    latency_runs: int = 20


PROFILES: dict[str, Profile] = {
    # The tweet corpus has 26.6k training rows; the default profile caps them to stay in budget.
    "default": Profile(name="default", epochs={"ner": 2.0, "classify": 1.0}, max_train_examples={"classify": 12000},
                       eval_steps=150),
    "full": Profile(name="full", epochs={"ner": 3.0, "classify": 1.0}, learning_rate=8e-5, eval_steps=300,
                    importance_batches=100, recovery_epochs=0.5, early_stopping_patience=3),
    "smoke": Profile(name="smoke", epochs={"ner": 1.0, "classify": 1.0}, max_train_examples={"ner": 3200, "classify": 2400},
                     max_eval_examples=400, eval_steps=50, importance_batches=8, recovery_epochs=0.3, latency_runs=5),
}

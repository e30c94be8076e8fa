"""Training budgets. ``default``: both built-in models in about an hour on a 2-core AVX2 CPU
(35 minutes on an AVX-512 one); ``full`` trains NER 3 epochs and sentiment on all its data (the NER
build measured 86 minutes of stages there beside another build); ``smoke`` is the end-to-end test's
few-minute budget; a user's data gets ``user_data`` (train until validation plateaus)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class PlateauBudget(BaseModel):
    """The training budget for a user's data (the profiles' epoch counts were measured on the
    built-in datasets): train until the validation metric stops improving (``patience``
    evaluations without a gain), evaluating ``evaluations_per_epoch`` times per pass, at most
    ``max_epochs`` passes, clamped to ``[min_steps, max_steps]`` optimizer steps, with the profile's
    10% linear warm-up. Used for fine-tuning and for the recovery after pruning."""

    max_epochs: float = Field(10.0, gt=0)
    min_steps: int = Field(200, ge=1)
    max_steps: int = Field(6000, ge=1)
    evaluations_per_epoch: float = Field(2.0, gt=0)
    patience: int = Field(3, ge=1)


class LoraSettings(BaseModel):
    """LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"): each targeted
    projection ``W`` becomes ``W + (alpha / rank) * B @ A`` with ``A`` ``[rank, in]`` and ``B``
    ``[out, rank]`` trained and ``W`` frozen; the task head (and the casing rows of the token-type
    embedding, when casing is on) train fully. ``target_modules`` None: the architecture adapter's
    (query and value projections for BERT, as in the paper). ``learning_rate``: LoRA's usual
    higher rate (the paper's GLUE runs use 4e-4 to 5e-4 for RoBERTa-base)."""

    rank: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    learning_rate: float = Field(5e-4, gt=0)
    target_modules: list[str] | None = None


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
    prune: bool = Field(True, description="structured pruning and its distilled recovery; False ships the "
                        "fine-tuned encoder unpruned (exported and quantized the same way)")
    int8: bool = Field(True, description="quantize to INT8; False ships the fused fp32 ONNX graph (recorded as "
                       "int8_variant 'fp32'), e.g. the unquantized accurate last step of a cascade")
    prune_heads_ratio: float = Field(0.35, description="fraction of all attention heads removed")
    prune_ffn_ratio: float = Field(0.55, description="fraction of FFN intermediate neurons removed per layer")
    importance_batches: int = 40
    require_batch_invariance: bool = Field(True, description="only INT8 variants whose predictions do not depend "
                                           "on batch-mates may ship (rules out dynamic INT8)")
    int8_max_drop_points: float = Field(0.3, description="INT8 variants within this many validation points of fp32 "
                                        "ONNX are eligible; the fastest eligible one ships (0.3: with pruning's "
                                        "~0.3, the gate's 1.0 keeps a 0.4-point margin)")
    selection_examples: int | None = Field(None, description="validation examples used to choose the INT8 variant "
                                           "(None = all of them)")
    calibration_examples: int = Field(256, description="training texts for static calibration (batch 1, unpadded)")
    invariance_examples: int = Field(500, description="test texts re-run alone to measure batch invariance")
    recovery_epochs: float = 2.0
    distill_alpha: float = Field(0.5, ge=0, le=1, description="recovery loss weight of the fp32 teacher's soft "
                                 "targets (0 = gold labels only)")
    distill_temperature: float = Field(2.0, gt=0, description="softmax temperature of logit distillation")
    prune_layers: int = Field(1, ge=0, description="whole encoder layers removed (least important first)")
    max_drop_points: float = Field(1.0, ge=0, description="accuracy gate: most test points the shipped model may "
                                   "lose against the fp32 fine-tuned model")
    min_int8_agreement: float = Field(0.99, ge=0, le=1, description="accuracy gate: least share of test words / "
                                      "texts on which INT8 and its fp32 source agree")
    latency_runs: int = 20
    seed: int = Field(13, description="seed of data order, dropout, head initialisation and every sampled batch; "
                      "recorded in the manifest")
    casing: dict[str, bool] = Field(
        default_factory=lambda: {"ner": True, "classify": False},
        description="per task ('ner', 'classify'): feed a casing class per sub-token through token_type_ids when the "
                    "tokenizer lowercases (see presso.core.casing); ignored for cased tokenizers")
    int8_selection_margin: float = Field(
        0.005, ge=0, le=0.01, description="INT8 variants must agree with fp32 ONNX on at least min_int8_agreement + "
        "this margin of validation predictions, so the test split's gate check holds")
    user_data: PlateauBudget = Field(default_factory=PlateauBudget, description="budget for --task builds on a "
                                     "user's files (epochs, recovery_epochs and max_train_examples apply to the "
                                     "built-in datasets)")
    method: Literal["full", "lora"] = Field("full", description="fine-tuning: every weight ('full') or LoRA "
                                            "adapters merged into the weights before pruning ('lora')")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="LoRA settings (method 'lora')")
    int8_fp32_fallback: bool = Field(True, description="ship the fp32 graph when no INT8 variant is eligible "
                                     "(recorded as int8_variant 'fp32'), instead of failing the gate")


PROFILES: dict[str, Profile] = {
    # The tweet corpus has 26.6k training rows; the default profile caps them to stay in budget.
    "default": Profile(name="default", epochs={"ner": 2.0, "classify": 1.0}, max_train_examples={"classify": 12000},
                       eval_steps=150),
    "full": Profile(name="full", epochs={"ner": 3.0, "classify": 1.0}, learning_rate=8e-5, eval_steps=300,
                    importance_batches=100, recovery_epochs=2.0, early_stopping_patience=3),
    # A faster, less accurate first step for a cascade (README, "Confidence cascades"): two layers,
    # half the heads and three quarters of the FFN removed; its gate allows 3 points because the
    # cascade's last step answers what it is unsure of (`presso calibrate` measures the cascade).
    "cascade-small": Profile(name="cascade-small", epochs={"ner": 2.0, "classify": 1.0},
                             max_train_examples={"classify": 12000}, eval_steps=150, prune_layers=2,
                             prune_heads_ratio=0.5, prune_ffn_ratio=0.75, max_drop_points=3.0,
                             int8_max_drop_points=0.5),
    "smoke": Profile(name="smoke", epochs={"ner": 1.0, "classify": 1.0}, max_train_examples={"ner": 3200, "classify": 2400},
                     max_eval_examples=400, eval_steps=50, importance_batches=8, recovery_epochs=0.3, latency_runs=5,
                     # a plumbing budget: a few minutes of training cannot keep within 1 point, and the gate
                     # would stop the end-to-end test instead of testing the service
                     max_drop_points=10.0, min_int8_agreement=0.9, int8_fp32_fallback=False),
}

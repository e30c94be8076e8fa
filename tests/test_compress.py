"""Compression stages on a tiny random BERT: structured pruning with uneven heads per layer,
ONNX export with parity, batch invariance of fp32 logits, INT8 quantization, preset choice."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from presso.compress.export import ExportParityError, check_parity, export_onnx  # noqa: E402
from presso.compress.prune import heads_to_prune, prune_model  # noqa: E402
from presso.compress.quantize import choose_preset, quantize_dynamic  # noqa: E402
from presso.compress.train import as_numpy_logits, ner_features  # noqa: E402
from presso.compress.data import NerExample  # noqa: E402
from presso.core.encoding import TextEncoder, pad_batch  # noqa: E402
from presso.core.runtime import OnnxModel  # noqa: E402
from tests.fakes import NER_LABELS, tiny_bert, write_tokenizer  # noqa: E402

TEXTS = ["john smith lives in paris .", "new york", "the day is good , jack smiths !", "a", "paris paris paris"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model = tiny_bert()
    d = tmp_path_factory.mktemp("tiny")
    encoder = TextEncoder(write_tokenizer(d / "tokenizer.json"), 32)
    return model, encoder, d


def labelled_batches(encoder, n=3):
    batches = []
    for _ in range(n):
        enc = pad_batch(encoder.encode(TEXTS))
        batch = {k: torch.from_numpy(v) for k, v in enc.items()}
        batch["labels"] = torch.randint(0, len(NER_LABELS), enc["input_ids"].shape)
        batches.append(batch)
    return batches


def test_heads_to_prune_keeps_one_head_per_layer():
    importance = torch.tensor([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])
    assert heads_to_prune(importance, ratio=0.5) == {0: [0, 1], 1: [2]}
    assert heads_to_prune(torch.zeros(2, 2), ratio=1.0) == {0: [0], 1: [0]}


def test_prune_export_parity_batch_invariance_and_int8(tiny, tmp_path):
    model, encoder, _ = tiny
    record = prune_model(model, labelled_batches(encoder), head_ratio=0.34, ffn_ratio=0.5)
    assert model.config.intermediate_size == 32
    assert sum(record["heads_per_layer"]) == 12 - 4
    assert len(set(record["heads_per_layer"])) > 1 or record["pruned_heads"], record  # really removed
    for layer in model.bert.encoder.layer:
        assert layer.intermediate.dense.weight.shape == (32, 32)
        assert layer.output.dense.weight.shape == (32, 32)

    onnx_path = export_onnx(model, "ner", tmp_path / "model.onnx")
    onnx_model = OnnxModel(onnx_path)
    torch_logits = as_numpy_logits(model)
    padded = pad_batch(encoder.encode(TEXTS))
    assert check_parity(torch_logits, onnx_model.run, [padded], atol=1e-4) < 1e-4

    # batch invariance: each text alone equals its row in the padded batch (fp32, 1e-4)
    batch_logits = onnx_model.run(padded)
    for row, enc in enumerate(encoder.encode(TEXTS)):
        alone = onnx_model.run(pad_batch([enc]))[0]
        assert np.abs(alone - batch_logits[row, : enc.length]).max() < 1e-4

    int8_path = quantize_dynamic(onnx_path, tmp_path / "int8.onnx")
    assert int8_path["method"] == "dynamic"
    int8 = OnnxModel(tmp_path / "int8.onnx")
    assert int8.run(padded).shape == batch_logits.shape


def test_parity_failure_is_a_typed_error(tiny):
    _, encoder, _ = tiny
    padded = pad_batch(encoder.encode(TEXTS))
    ref = lambda b: np.zeros((*b["input_ids"].shape, 3), dtype=np.float32)  # noqa: E731
    off = lambda b: np.full((*b["input_ids"].shape, 3), 0.01, dtype=np.float32)  # noqa: E731
    with pytest.raises(ExportParityError, match="exceeds tolerance"):
        check_parity(ref, off, [padded], atol=1e-4)


def test_ner_features_label_first_subtoken_and_continuations(tiny):
    tokenizer = transformers.BertTokenizerFast(tokenizer_file=str(tiny[2] / "tokenizer.json"))
    ex = NerExample(["jacksville", "is", "good"], ["B-LOC", "O", "O"])
    feat = ner_features(tokenizer, [ex], NER_LABELS, 32)[0]
    b, i = NER_LABELS.index("B-LOC"), NER_LABELS.index("I-LOC")
    assert feat["labels"] == [-100, b, i, i, 0, 0, -100]  # [CLS] jack ##s ##ville is good [SEP]
    plain = ner_features(tokenizer, [ex], NER_LABELS, 32, label_continuations=False)[0]
    assert plain["labels"] == [-100, b, -100, -100, 0, 0, -100]


@pytest.mark.parametrize("flags, machine, preset", [
    ({"avx2", "avx512f", "avx512_vnni"}, "x86_64", "avx512_vnni"),
    ({"avx2", "avx_vnni"}, "x86_64", "avx512_vnni"),
    ({"avx2", "avx512f"}, "x86_64", "avx512"),
    ({"avx2"}, "x86_64", "avx2"),
    (set(), "aarch64", "arm64"),
])
def test_quantization_preset_follows_cpu_flags(flags, machine, preset):
    assert choose_preset(flags, machine) == preset


def test_fine_tune_runs_the_trainer_with_early_stopping_metrics(tiny, tmp_path):
    from presso.compress.data import Splits
    from presso.compress.profiles import PROFILES
    from presso.compress.train import fine_tune

    _, _, d = tiny
    tokenizer = transformers.BertTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    model = tiny_bert(num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).train()
    examples = [NerExample(["jacksville", "is", "good"], ["B-LOC", "O", "O"]),
                NerExample(["john", "smith", "lives", "in", "paris"], ["B-PER", "I-PER", "O", "O", "B-LOC"])] * 8
    splits = Splits("ner", "fake", examples, examples[:4], examples[:4], NER_LABELS)
    profile = PROFILES["smoke"].model_copy(update={"batch_size": 4, "eval_steps": 2})
    model, history = fine_tune(model, tokenizer, splits, profile, tmp_path, 1.0, examples, examples[:4], "fine_tune")
    assert history["steps"] == 4
    assert [h["step"] for h in history["evaluations"]] == [2, 4]  # the last step is always evaluated
    assert 0 <= history["best_validation"]["f1"] <= 1


def test_plateau_schedule_scales_with_the_data():
    from presso.compress.profiles import PlateauBudget
    from presso.compress.train import plateau_schedule

    budget = PlateauBudget(max_epochs=10, min_steps=200, max_steps=6000, evaluations_per_epoch=2)
    assert plateau_schedule(313, budget) == (3140, 157)  # 10 passes evaluated twice each, to a whole evaluation
    assert plateau_schedule(5, budget) == (201, 3)  # small data: at least min_steps
    assert plateau_schedule(2000, budget) == (6000, 1000)  # large data: at most max_steps
    steps, every = plateau_schedule(7, PlateauBudget(max_epochs=1, min_steps=1, evaluations_per_epoch=0.5))
    assert steps == every == 7  # never evaluates less often than the whole budget


def test_a_user_dataset_trains_until_the_validation_metric_plateaus(tiny, tmp_path):
    """Early stopping (patience) ends a plateau budget before its cap, and the history says which ended it."""
    from presso.compress.data import Splits
    from presso.compress.profiles import PROFILES, PlateauBudget
    from presso.compress.train import fine_tune

    _, _, d = tiny
    tokenizer = transformers.BertTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    model = tiny_bert(num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).train()
    examples = [NerExample(["john", "is", "good"], ["B-PER", "O", "O"])] * 8
    splits = Splits("ner", "fake", examples, examples[:4], examples[:4], NER_LABELS)
    profile = PROFILES["smoke"].model_copy(update={"batch_size": 4, "learning_rate": 5e-3})
    plateau = PlateauBudget(max_epochs=100, min_steps=1, max_steps=400, evaluations_per_epoch=1, patience=1)
    _, history = fine_tune(model, tokenizer, splits, profile, tmp_path, 1.0, examples, examples[:4], "fine_tune",
                           plateau=plateau)
    assert history["budget"]["kind"] == "plateau" and history["budget"]["max_steps"] == 200
    assert history["budget"]["ended_by"] == "plateau" and history["steps"] < 200


def test_the_same_seed_trains_the_same_weights_and_scores_the_same_importance(tiny, tmp_path):
    """Run-to-run determinism: fine-tuning (data order, dropout) and importance scoring depend
    only on the seed and the checkpoint."""
    from presso.compress.data import Splits
    from presso.compress.profiles import PROFILES
    from presso.compress.prune import importance_scores
    from presso.compress.train import enable_casing, fine_tune

    _, encoder, d = tiny
    tokenizer = transformers.BertTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    examples = [NerExample(["Jacksville", "is", "good"], ["B-LOC", "O", "O"]),
                NerExample(["John", "SMITH", "lives", "in", "paris"], ["B-PER", "I-PER", "O", "O", "B-LOC"])] * 8
    splits = Splits("ner", "fake", examples, examples[:4], examples[:4], NER_LABELS)

    def train(seed: int, run: str):
        transformers.set_seed(seed)
        model = tiny_bert(num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, seed=seed)
        enable_casing(model)
        profile = PROFILES["smoke"].model_copy(update={"batch_size": 4, "eval_steps": 2, "seed": seed})
        model, _ = fine_tune(model.train(), tokenizer, splits, profile, tmp_path / run, 1.0, examples, examples[:4],
                             "fine_tune")
        return model

    a, b, c = train(5, "a"), train(5, "b"), train(6, "c")
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))
    batches = labelled_batches(encoder)
    heads_a, ffn_a = importance_scores(a, batches)
    heads_b, ffn_b = importance_scores(b, batches)
    assert torch.equal(heads_a, heads_b) and all(torch.equal(x, y) for x, y in zip(ffn_a, ffn_b))


def test_distillation_loss_matches_the_formula_and_ignores_unlabelled_positions():
    from presso.compress.train import distillation_loss

    torch.manual_seed(1)
    student, teacher = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    labels = torch.tensor([[0, 1, -100, 2], [-100, -100, 1, 0]])
    hard = torch.tensor(0.7)
    got = distillation_loss(student, teacher, labels, hard, alpha=0.5, temperature=2.0)
    keep = labels != -100
    s, t = student[keep] / 2.0, teacher[keep] / 2.0
    kl = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1).mean()
    assert torch.allclose(got, 0.5 * 4.0 * kl + 0.5 * hard, atol=1e-6)
    assert distillation_loss(teacher, teacher, labels, hard, 1.0, 2.0).abs() < 1e-6  # same logits: no soft loss
    same = distillation_loss(student[:, 0], teacher[:, 0], labels[:, 0], hard, 0.0, 2.0)  # classification shape
    assert torch.allclose(same, hard)


def test_recovery_with_a_teacher_runs_the_distillation_trainer(tiny, tmp_path):
    import copy

    from presso.compress.data import Splits
    from presso.compress.profiles import PROFILES
    from presso.compress.train import fine_tune

    model, _, d = tiny
    student = copy.deepcopy(model)
    tokenizer = transformers.BertTokenizerFast(tokenizer_file=str(d / "tokenizer.json"))
    examples = [NerExample(["john", "smith", "lives", "in", "paris"], ["B-PER", "I-PER", "O", "O", "B-LOC"])] * 8
    splits = Splits("ner", "fake", examples, examples[:4], examples[:4], NER_LABELS)
    profile = PROFILES["smoke"].model_copy(update={"batch_size": 4, "eval_steps": 2})
    student, history = fine_tune(student, tokenizer, splits, profile, tmp_path, 1.0, examples, examples[:4],
                                 "recovery", teacher=copy.deepcopy(model))
    assert history["steps"] == 2


def test_dropped_layers_and_uneven_heads_export_fuse_and_match(tiny, tmp_path):
    from presso.compress.prune import drop_layers, layers_to_drop
    from presso.compress.quantize import optimize_graph

    _, encoder, _ = tiny
    model = tiny_bert()  # unpruned: scoring needs even heads
    assert layers_to_drop(torch.tensor([3.0, 0.5, 2.0]), 1) == [1]
    assert layers_to_drop(torch.ones(2), 5) == [0]  # one layer always stays
    record = prune_model(model, labelled_batches(encoder), head_ratio=0.25, ffn_ratio=0.5, n_layers=1)
    assert len(record["layers_dropped"]) == 1 and model.config.num_hidden_layers == 2
    assert len(record["layer_importance_loss_increase"]) == 3
    drop_layers(model, [])  # no-op
    onnx_path = export_onnx(model, "ner", tmp_path / "model.onnx")
    padded = pad_batch(encoder.encode(TEXTS))
    assert check_parity(as_numpy_logits(model), OnnxModel(onnx_path).run, [padded], atol=1e-4) < 1e-4
    fused = optimize_graph(onnx_path, tmp_path / "fused.onnx")
    assert fused["library"] == "onnxruntime.transformers.optimizer"
    assert check_parity(OnnxModel(onnx_path).run, OnnxModel(tmp_path / "fused.onnx").run, [padded], atol=1e-3) < 1e-3


def test_choose_int8_builds_scores_and_records_every_candidate(tiny, tmp_path):
    import json

    from presso.compress.choose import choose_int8
    from presso.compress.data import Splits
    from presso.compress.evaluate import TestSet

    model, encoder, _ = tiny
    onnx_path = export_onnx(model, "ner", tmp_path / "model.onnx")
    examples = [NerExample(t.split(), ["O"] * len(t.split())) for t in TEXTS] * 4
    selection = TestSet(Splits("ner", "fake", examples, examples, examples, NER_LABELS), encoder, examples)
    calibration = [pad_batch([e]) for e in encoder.encode(TEXTS)]
    result = choose_int8(onnx_path, None, OnnxModel(onnx_path), tmp_path / "int8.onnx", calibration, selection,
                         "f1", max_drop_points=100.0, require_invariance=True, work=tmp_path,
                         timing_shape=(2, 16))
    json.dumps(result)  # goes into the manifest as is
    names = {c["candidate"] for c in result["candidates"]}
    assert names == {"static", "static_ffn_output_fp32", "static_ffn_fp32", "static_scores_fp32",
                     "static_ffn_scores_fp32", "dynamic_per_channel", "dynamic", "fp32"}
    chosen = next(c for c in result["candidates"] if c["candidate"] == result["candidate"])
    assert chosen["eligible"] and chosen["batch_invariance"] == 1.0 and (tmp_path / "int8.onnx").exists()
    assert result["candidate"] != "fp32"  # an INT8 variant is eligible, so the fallback does not ship
    fallback = next(c for c in result["candidates"] if c["candidate"] == "fp32")
    assert "skipped" in fallback and not (tmp_path / "int8-fp32.onnx").exists()  # nor is it built and scored
    scores_fp32 = next(c for c in result["candidates"] if c["candidate"] == "static_scores_fp32")
    assert {"/bert/encoder/layer.0/attention/self/MatMul", "/bert/encoder/layer.0/attention/self/MatMul_1"} <= set(
        scores_fp32["settings"]["nodes_kept_fp32"])
    assert result["selection"]["examples"] == len(examples)

    # Agreement no INT8 variant can reach on random weights: the fp32 graph ships, agreeing fully.
    strict = choose_int8(onnx_path, None, OnnxModel(onnx_path), tmp_path / "int8.onnx", calibration, selection,
                         "f1", max_drop_points=100.0, require_invariance=True, work=tmp_path,
                         timing_shape=(2, 16), min_agreement=1.0 + 1e-9)
    assert strict["candidate"] == "fp32" and "shipping fp32" in strict["chosen_because"]
    assert check_parity(OnnxModel(onnx_path).run, OnnxModel(tmp_path / "int8.onnx").run,
                        [pad_batch(encoder.encode(TEXTS))], atol=0.0) == 0.0


def test_trainer_validation_metric_decodes_like_the_service():
    """The Trainer's NER validation F1 (which picks the best checkpoint) uses the IOB2 Viterbi
    decoding the service ships, not a per-word argmax."""
    from types import SimpleNamespace

    import numpy as np

    from presso.compress.train import IGNORE_INDEX, compute_metrics_fn

    labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]
    # word 2's argmax is I-ORG after B-PER: invalid IOB2; Viterbi repairs it to I-PER
    probs = np.array([[[0.05, 0.9, 0.02, 0.02, 0.01],
                       [0.05, 0.02, 0.45, 0.02, 0.46],
                       [0.9, 0.025, 0.025, 0.025, 0.025]]])
    gold = np.array([[1, 2, 0]])
    pred = SimpleNamespace(predictions=np.log(probs), label_ids=gold)
    assert compute_metrics_fn("ner", labels)(pred)["f1"] == 1.0
    gold_masked = np.array([[1, IGNORE_INDEX, 0]])
    pred = SimpleNamespace(predictions=np.log(probs), label_ids=gold_masked)
    assert compute_metrics_fn("ner", labels)(pred)["f1"] == 1.0


def test_a_fine_tuned_checkpoint_adapts_to_another_label_set_keeping_encoder_and_casing(tmp_path):
    """A news NER checkpoint as the base of a tweet model with ten types: same encoder weights and
    casing rows, a new head of the new size (label counts differ)."""
    from presso.compress.train import enable_casing, load_model

    news = tiny_bert()
    enable_casing(news)
    with torch.no_grad():  # learned casing rows differ from each other
        news.bert.embeddings.token_type_embeddings.weight.normal_()
    news.save_pretrained(tmp_path / "news")
    labels = ["O"] + [f"{p}-T{i}" for i in range(10) for p in ("B", "I")]
    adapted = load_model("ner", tmp_path / "news", labels)
    assert adapted.classifier.out_features == len(labels)
    assert adapted.config.id2label[1] == "B-T0"
    assert getattr(adapted.config, "presso_casing", False)
    for name, weight in news.bert.state_dict().items():
        assert torch.equal(weight, adapted.bert.state_dict()[name]), name


def test_a_head_trained_for_other_labels_of_the_same_count_is_replaced(tmp_path):
    from presso.compress.train import load_model

    news = tiny_bert()
    news.save_pretrained(tmp_path / "news")
    renamed = ["O"] + [f"{p}-X{i}" for i in range(2) for p in ("B", "I")]
    assert len(renamed) == news.config.num_labels
    adapted = load_model("ner", tmp_path / "news", renamed)
    assert not torch.equal(adapted.classifier.weight, news.classifier.weight)
    assert torch.equal(adapted.bert.embeddings.word_embeddings.weight, news.bert.embeddings.word_embeddings.weight)
    same = load_model("ner", tmp_path / "news", [news.config.id2label[i] for i in range(news.config.num_labels)])
    assert torch.equal(same.classifier.weight, news.classifier.weight)  # same labels: the head is kept

"""Fine-tuning with the transformers Trainer (so ``torchrun`` / ``accelerate launch`` distribute it
unchanged), early stopping on the validation metric.

NER labels are aligned to the first sub-token of each word (Devlin et al. 2019, section 5.3), and
words are decoded from their first sub-token. With ``label_continuations`` (the ``label_all_tokens``
option of Hugging Face's ``run_ner.py``) the other sub-tokens are trained too, as the inside of the
word's entity (``B-X`` -> ``I-X``) or ``O``; otherwise they get -100 and no loss. Training them
matters at serving time: raw text is split into words by the tokenizer's pre-tokenizer (whitespace
and punctuation), so a CoNLL token such as ``U.S.`` or ``St.`` arrives as several words whose
later pieces were continuation sub-tokens in training.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from presso.compress.data import NerExample, Splits, TextExample
from presso.compress.metrics import classification_metrics, ner_metrics, primary_metric
from presso.compress.profiles import PlateauBudget, Profile
from presso.core.casing import CASING_CLASSES, casing_type_ids
from presso.core.spans import iob2_viterbi

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, features: list[dict]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return self.features[i]


def load_model(task: str, path: str | Path, labels: Sequence[str] | None = None):
    """A BERT-family encoder with a token- or sequence-classification head from a local path.

    With ``labels``, a checkpoint already fine-tuned for another label set (e.g. a news NER model
    adapted to tweets) keeps its encoder and gets a new, randomly initialised head: transformers
    re-initialises a head whose shape differs, and a head trained for other labels of the same
    count is replaced here (its rows would otherwise carry the old labels' meaning)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    cls = AutoModelForTokenClassification if task == "ner" else AutoModelForSequenceClassification
    if labels is None:
        return cls.from_pretrained(path)
    saved = AutoConfig.from_pretrained(path)
    heads = ("ForTokenClassification", "ForSequenceClassification")
    trained = ([saved.id2label[i] for i in range(saved.num_labels)]
               if any(a.endswith(heads) for a in (saved.architectures or [])) else None)
    model = cls.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, ignore_mismatched_sizes=True,
    )
    if trained is not None and len(trained) == len(labels) and trained != list(labels):
        fresh = dict(cls.from_config(model.config).named_parameters())
        prefix = model.base_model_prefix + "."
        with torch.no_grad():
            for name, param in model.named_parameters():
                if not name.startswith(prefix):
                    param.copy_(fresh[name])
    return model


def enable_casing(model) -> None:
    """Widen the encoder's token-type embedding to one row per casing class (:mod:`presso.core.casing`),
    every new row a copy of the existing type-0 embedding, so the untrained model computes exactly
    what it did before; fine-tuning then learns what each class means. Marks the config
    (``presso_casing``, ``type_vocab_size``) so a saved checkpoint reloads with the same input.

    Raises:
        ValueError: the encoder has no token-type embedding to widen.
    """
    from presso.compress.arch import adapter_for

    adapter = adapter_for(model)
    old = adapter.type_embedding(model)
    if old is None:
        raise ValueError(f"{type(model.base_model).__name__} has no token_type_embeddings")
    new = torch.nn.Embedding(len(CASING_CLASSES), old.embedding_dim)
    with torch.no_grad():
        new.weight.copy_(old.weight[0].expand(len(CASING_CLASSES), -1))
    adapter.set_type_embedding(model, new)
    model.config.presso_casing = True


def uses_casing(model) -> bool:
    return bool(getattr(model.config, "presso_casing", False))


def continuation_tag(tag: str) -> str:
    """Tag of a word's later sub-tokens: inside the same entity, or O."""
    return "I-" + tag[2:] if tag != "O" else "O"


def _type_ids(enc, i: int, source, casing: bool) -> list[int]:
    """Token-type ids of sequence ``i``: casing classes (the service's own function) or the tokenizer's."""
    if casing:
        return casing_type_ids(enc.word_ids(i), enc["offset_mapping"][i], source)
    return enc["token_type_ids"][i] if "token_type_ids" in enc else [0] * len(enc["input_ids"][i])


def ner_features(tokenizer, examples: Sequence[NerExample], labels: Sequence[str], max_seq_len: int,
                 label_continuations: bool = True, casing: bool = False) -> list[dict]:
    """Tokenize pre-split sentences; ``labels`` ``[seq_len]`` holds tag ids (-100 = no loss);
    ``casing``: ``token_type_ids`` carry casing classes."""
    label_id = {label: i for i, label in enumerate(labels)}
    enc = tokenizer([ex.tokens for ex in examples], is_split_into_words=True, truncation=True,
                    max_length=max_seq_len, return_offsets_mapping=casing)
    features = []
    for i, ex in enumerate(examples):
        word_ids = enc.word_ids(i)
        seq_labels, prev = [], None
        for w in word_ids:
            if w is None:
                seq_labels.append(IGNORE_INDEX)
            elif w != prev:
                seq_labels.append(label_id[ex.tags[w]])
            else:
                seq_labels.append(label_id[continuation_tag(ex.tags[w])] if label_continuations else IGNORE_INDEX)
            prev = w
        features.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                         "token_type_ids": _type_ids(enc, i, ex.tokens, casing), "labels": seq_labels})
    return features


def classification_features(tokenizer, examples: Sequence[TextExample], labels: Sequence[str],
                            max_seq_len: int, casing: bool = False) -> list[dict]:
    label_id = {label: i for i, label in enumerate(labels)}
    enc = tokenizer([ex.text for ex in examples], truncation=True, max_length=max_seq_len,
                    return_offsets_mapping=casing)
    return [{"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
             "token_type_ids": _type_ids(enc, i, ex.text, casing), "labels": label_id[ex.label]}
            for i, ex in enumerate(examples)]


def features(task: str, tokenizer, examples: Sequence, labels: Sequence[str], profile: Profile,
             casing: bool = False) -> list[dict]:
    if task == "ner":
        out = ner_features(tokenizer, examples, labels, profile.max_seq_len, profile.label_continuations, casing)
    else:
        out = classification_features(tokenizer, examples, labels, profile.max_seq_len, casing)
    if not casing and "token_type_ids" not in tokenizer.model_input_names:  # RoBERTa, DistilBERT, DeBERTa, ...
        for feature in out:
            del feature["token_type_ids"]
    return out


def compute_metrics_fn(task: str, labels: Sequence[str]):
    """Trainer ``compute_metrics`` using the same metric code as stage evaluation (NER: one tag per
    word, read at its first sub-token and decoded with :func:`presso.core.spans.iob2_viterbi` as the
    service and stage evaluation decode; validation features label only first sub-tokens, so the
    mask survives the Trainer's length-grouped evaluation order)."""

    def ner(pred) -> dict:
        logits = pred.predictions - pred.predictions.max(-1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(-1, keepdims=True)
        true, guess = [], []
        for p_row, l_row in zip(probs, pred.label_ids):
            keep = l_row != IGNORE_INDEX
            true.append([labels[i] for i in l_row[keep]])
            guess.append([labels[i] for i in iob2_viterbi(p_row[keep], labels)])
        m = ner_metrics(true, guess)
        return {"f1": m["f1"], "precision": m["precision"], "recall": m["recall"]}

    def classify(pred) -> dict:
        return classification_metrics([labels[i] for i in pred.label_ids],
                                      [labels[i] for i in pred.predictions.argmax(-1)])

    return ner if task == "ner" else classify


def collator(task: str, tokenizer):
    from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding

    if task == "ner":
        return DataCollatorForTokenClassification(tokenizer)
    return DataCollatorWithPadding(tokenizer)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                      hard_loss: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """``alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * hard_loss``.

    Logit distillation of Hinton, Vinyals & Dean 2015 ("Distilling the Knowledge in a Neural
    Network"; the T^2 factor keeps the soft-target gradients' scale), as used by DistilBERT (Sanh
    et al. 2019) and FastFormers (Kim & Hassan 2020) after pruning.

    Args:
        student_logits, teacher_logits: ``[batch, seq_len, num_labels]`` (token classification;
            only positions whose ``labels`` are not -100 count) or ``[batch, num_labels]``.
        labels: ``[batch, seq_len]`` or ``[batch]``.
        hard_loss: the student's cross-entropy on the gold labels.
    """
    import torch.nn.functional as F

    if student_logits.dim() == 3:
        keep = labels != IGNORE_INDEX
        student_logits, teacher_logits = student_logits[keep], teacher_logits[keep]
    if student_logits.numel() == 0:
        return hard_loss
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.softmax(teacher_logits / temperature, dim=-1), reduction="batchmean")
    return alpha * temperature ** 2 * soft + (1.0 - alpha) * hard_loss


def _distillation_trainer(teacher, alpha: float, temperature: float):
    from transformers import Trainer

    class DistillationTrainer(Trainer):
        """Trainer whose loss mixes the gold labels with the fp32 teacher's soft targets."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs)
            teacher.to(outputs.logits.device)  # no-op once there
            with torch.no_grad():
                teacher_logits = teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits
            loss = distillation_loss(outputs.logits, teacher_logits, inputs["labels"], outputs.loss, alpha,
                                     temperature)
            return (loss, outputs) if return_outputs else loss

    return DistillationTrainer


def fine_tune(model, tokenizer, splits: Splits, profile: Profile, work_dir: Path, epochs: float,
              train_examples: Sequence, validation_examples: Sequence, stage: str, teacher=None,
              plateau: PlateauBudget | None = None):
    """Train ``model`` in place with the Trainer and return it with the best validation checkpoint.

    Args:
        epochs: passes over ``train_examples`` (fractions allowed).
        stage: name used for the run directory and logs (``fine_tune``, ``recovery``).
        teacher: a model with the same head whose logits are distilled into ``model``
            (:func:`distillation_loss`, ``profile.distill_alpha`` / ``distill_temperature``).
        plateau: train until validation stops improving within this budget instead of ``epochs``
            (:func:`plateau_schedule`).

    Returns:
        (model, history) where history lists the validation metrics of every evaluation and
        ``budget``: the steps allowed and whether early stopping (``plateau``) or the step
        budget (``cap``) ended training.
    """
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    task, labels, casing = splits.task, splits.labels, uses_casing(model)
    train_ds = ListDataset(features(task, tokenizer, train_examples, labels, profile, casing))
    val_ds = ListDataset(features(task, tokenizer, validation_examples, labels,
                                  profile.model_copy(update={"label_continuations": False}), casing))
    steps_per_epoch = math.ceil(len(train_ds) / profile.batch_size)
    if plateau is None:
        max_steps = max(1, round(steps_per_epoch * epochs))
        # Evaluate at evenly spaced steps that include the last one, so no training is discarded.
        n_evals = math.ceil(max_steps / profile.eval_steps)
        eval_steps = math.ceil(max_steps / n_evals)
        max_steps, patience = eval_steps * n_evals, profile.early_stopping_patience
    else:
        max_steps, eval_steps = plateau_schedule(steps_per_epoch, plateau)
        epochs, patience = max_steps / steps_per_epoch, plateau.patience
    metric = primary_metric(task)
    args = TrainingArguments(
        output_dir=str(work_dir / stage),
        max_steps=max_steps,
        per_device_train_batch_size=profile.batch_size,
        per_device_eval_batch_size=64,
        learning_rate=profile.learning_rate,
        weight_decay=0.01,
        warmup_ratio=0.1,
        lr_scheduler_type="linear",
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=True,
        group_by_length=True,
        logging_steps=max(1, eval_steps // 3),
        report_to=[],
        seed=profile.seed,
        data_seed=profile.seed,
        full_determinism=True,
        dataloader_num_workers=0,
        disable_tqdm=False,
        use_cpu=not torch.cuda.is_available(),
        save_safetensors=True,
    )
    trainer_cls = Trainer if teacher is None else _distillation_trainer(teacher, profile.distill_alpha,
                                                                        profile.distill_temperature)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=collator(task, tokenizer),
        compute_metrics=compute_metrics_fn(task, labels),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=patience)],
    )
    log.info("%s: %d examples, %d steps (%.2f epochs), evaluating every %d steps on %d validation examples%s",
             stage, len(train_ds), max_steps, epochs, eval_steps, len(val_ds),
             f", distilling (alpha {profile.distill_alpha}, T {profile.distill_temperature})" if teacher else "")
    trainer.train()
    history = [
        {k: v for k, v in entry.items() if k.startswith("eval_") or k in ("step", "epoch")}
        for entry in trainer.state.log_history if f"eval_{metric}" in entry
    ]
    best = max((h[f"eval_{metric}"] for h in history), default=float("nan"))
    log.info("%s: best validation %s %.4f after %d steps", stage, metric, best, trainer.state.global_step)
    steps = trainer.state.global_step
    budget = {"kind": "epochs" if plateau is None else "plateau", "max_steps": max_steps, "eval_steps": eval_steps,
              "patience": patience, "ended_by": "plateau" if steps < max_steps else "cap"}
    if plateau is not None and steps >= max_steps:
        log.warning("%s: the step budget (%d steps), not a validation plateau, ended training", stage, max_steps)
    return trainer.model, {"steps": steps, "best_validation": {metric: best}, "budget": budget,
                           "evaluations": history}


def plateau_schedule(steps_per_epoch: int, plateau: PlateauBudget) -> tuple[int, int]:
    """``(max_steps, eval_steps)`` for a plateau budget: ``max_epochs`` passes clamped to
    ``[min_steps, max_steps]``, evaluated every ``1 / evaluations_per_epoch`` pass, rounded up to a
    whole number of evaluations so the last step is evaluated."""
    cap = min(plateau.max_steps, max(plateau.min_steps, round(steps_per_epoch * plateau.max_epochs)))
    eval_steps = max(1, min(cap, math.ceil(steps_per_epoch / plateau.evaluations_per_epoch)))
    n_evals = math.ceil(cap / eval_steps)
    return eval_steps * n_evals, eval_steps


def model_inputs(model) -> set[str]:
    """Names of the inputs ``model.forward`` takes (``input_ids``, ``attention_mask``, ...)."""
    import inspect

    return set(inspect.signature(model.forward).parameters)


def as_numpy_logits(model):
    """Adapter: a torch model as ``batch dict of int64 [batch, seq_len] -> float32 logits``; keys
    the model's ``forward`` does not take (``token_type_ids`` for DistilBERT, MPNet) are dropped."""
    model.eval()
    accepted = model_inputs(model)

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in batch.items() if k in accepted}).logits.float().numpy()

    return run

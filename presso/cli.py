"""The ``presso`` command line: build models, serve them, evaluate a running service."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Fine-tune, prune, quantize and serve BERT-family encoders.")


class Builtin(str, Enum):
    ner = "ner"
    sentiment = "sentiment"
    wnut = "wnut"
    news_tweets = "news-tweets"
    domains = "domains"


class Task(str, Enum):
    ner = "ner"
    classify = "classify"


class Method(str, Enum):
    full = "full"
    lora = "lora"


def _logging(level: str = "INFO") -> None:
    from presso.service.logs import configure_logging

    configure_logging(level)


@app.command()
def build(
    dataset: Optional[Builtin] = typer.Argument(None, help="built-in model: ner (CoNLL-2003), sentiment "
                                         "(tweets), wnut (WNUT-16 tweets NER), news-tweets (both NER corpora, tweet "
                                         "types mapped) or domains (news vs tweet, a router)"),
    task: Optional[Task] = typer.Option(None, help="task for your own data (with --train, optionally "
                                        "--validation and --test)"),
    train: Optional[Path] = typer.Option(None, help="training file. classify: CSV, TSV, JSONL or Parquet; ner: "
                                         "CoNLL columns, or JSONL/Parquet with token and tag lists"),
    validation: Optional[Path] = typer.Option(None, help="validation file, same format (default: a stratified "
                                              "10% of --train, held out with --seed)"),
    test: Optional[Path] = typer.Option(None, help="test file, same format (default: the validation split, "
                                        "stated in the manifest)"),
    text_column: str = typer.Option("text", help="classify: column with the text"),
    label_column: str = typer.Option("label", help="classify: column with the label"),
    tokens_column: str = typer.Option("tokens", help="ner, JSONL/Parquet: column with the token list"),
    tags_column: str = typer.Option("tags", help="ner, JSONL/Parquet: column with the IOB1/IOB2 tag list"),
    tag_column: int = typer.Option(-1, help="ner, CoNLL files: 0-based index of the tag column (-1: the last)"),
    strict: bool = typer.Option(False, "--strict", help="refuse rows with empty text (or no tokens) instead of "
                                "counting and skipping them"),
    name: Optional[str] = typer.Option(None, help="artifact name (default: the dataset or task name)"),
    profile: str = typer.Option("default", help="training budget: default, full, cascade-small (a faster, less "
                                "accurate first step for a cascade) or smoke"),
    models_dir: Path = typer.Option(Path("models"), help="where artifacts are written"),
    if_missing: bool = typer.Option(False, "--if-missing", help="skip when the artifact already exists"),
    work_dir: Optional[Path] = typer.Option(None, help="keep checkpoints, fp32 ONNX models and INT8 candidates "
                                            "here (presso bench model reads them)"),
    reuse_fine_tuned: bool = typer.Option(False, "--reuse-fine-tuned", help="start from --work-dir's fp32 "
                                          "checkpoint of an earlier build instead of fine-tuning again"),
    base_model: Optional[Path] = typer.Option(None, help="local Hugging Face folder (config, weights, fast "
                                              "tokenizer) of a BERT, RoBERTa, XLM-R, DistilBERT, ELECTRA, ALBERT, "
                                              "DeBERTa-v2/v3 or MPNet encoder to fine-tune (default: the packaged "
                                              "MiniLM)"),
    fine_tuned: Optional[Path] = typer.Option(None, help="local folder of a model already fine-tuned for this task "
                                              "(*ForTokenClassification / *ForSequenceClassification): compressed "
                                              "without fine-tuning; its id2label are the labels, it is the teacher "
                                              "and the gate's reference"),
    seed: Optional[int] = typer.Option(None, help="seed of data order, dropout, head initialisation and sampled "
                                       "batches (default: the profile's, 13); recorded in the manifest"),
    method: Optional[Method] = typer.Option(None, help="fine-tuning: full (every weight; the profile's default) or "
                                            "lora (LoRA adapters through peft, merged into the weights before "
                                            "pruning)"),
    lora_rank: Optional[int] = typer.Option(None, min=1, help="--method lora: adapter rank (default: the profile's, 16)"),
    lora_targets: Optional[str] = typer.Option(None, help="--method lora: comma-separated module names to adapt "
                                               "(default: the architecture adapter's, every encoder-block linear layer)"),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="--no-prune: skip structured pruning and its "
                               "recovery (an unpruned INT8 model, e.g. a cascade's accurate last step)"),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="--no-int8: ship the fused fp32 ONNX graph instead "
                              "of an INT8 one (e.g. with --no-prune: the unpruned, unquantized last step of a "
                              "cascade)"),
    casing: Optional[bool] = typer.Option(None, "--casing/--no-casing", help="feed each sub-token's casing class "
                                          "through token_type_ids when the tokenizer lowercases (default: the "
                                          "profile's, on for ner, off for classification; on helps a classifier "
                                          "whose labels follow writing style, such as the domains router)"),
) -> None:
    """Fine-tune, prune, export, quantize and evaluate a model, and write models/<name>/.

    Exit status 3 when the accuracy gate fails (the model is not installed; see the gate report)."""
    _logging()
    from presso.compress.data import DataError
    from presso.compress.datasets import load_builtin, load_user_data
    from presso.compress.readers import DataLayout
    from presso.compress.gate import AccuracyGateError
    from presso.compress.pipeline import build as run_build
    from presso.compress.profiles import PROFILES

    if profile not in PROFILES:
        raise typer.BadParameter(f"unknown profile {profile!r}; choose from {sorted(PROFILES)}", param_hint="--profile")
    if (dataset is None) == (task is None):
        raise typer.BadParameter("give either a built-in dataset (ner, sentiment) or --task with your files")
    if task is not None and not train:
        raise typer.BadParameter("--task needs --train (--validation and --test are optional)", param_hint="--task")
    if task is None and (train or validation or test):
        raise typer.BadParameter("--train/--validation/--test go with --task, not a built-in dataset",
                                 param_hint="--train")
    if reuse_fine_tuned and work_dir is None:
        raise typer.BadParameter("--reuse-fine-tuned needs --work-dir", param_hint="--reuse-fine-tuned")
    if method is Method.lora and fine_tuned is not None:
        raise typer.BadParameter("--method lora fine-tunes; --fine-tuned models are not fine-tuned again",
                                 param_hint="--method")
    if method is Method.lora and reuse_fine_tuned:
        raise typer.BadParameter("--method lora fine-tunes; --reuse-fine-tuned skips fine-tuning",
                                 param_hint="--method")
    from presso.compress.base_model import BaseModelError, fine_tuned_labels, local_base_model

    if base_model is not None and fine_tuned is not None:
        raise typer.BadParameter("give --base-model (to fine-tune) or --fine-tuned (already fine-tuned), not both",
                                 param_hint="--fine-tuned")
    option = "--fine-tuned" if fine_tuned is not None else "--base-model"
    try:
        folder = fine_tuned if fine_tuned is not None else base_model
        base = local_base_model(folder) if folder is not None else None
    except BaseModelError as exc:
        typer.echo(f"error: {option} {exc}", err=True)
        raise typer.Exit(2)
    name = name or (dataset.value if dataset else task.value)
    if if_missing and (models_dir / name / "manifest.json").exists():
        typer.echo(f"{models_dir / name} exists; skipping")
        return
    try:
        if dataset is not None:
            splits = load_builtin(dataset.value)
        else:
            layout = DataLayout(text_column=text_column, label_column=label_column, tokens_column=tokens_column,
                                tags_column=tags_column, tag_column=tag_column, strict=strict)
            splits = load_user_data(task.value, train, validation, test, layout,
                                    seed=PROFILES[profile].seed if seed is None else seed)
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    if fine_tuned is not None:
        import dataclasses

        try:
            splits = dataclasses.replace(splits, labels=fine_tuned_labels(base, splits.task, splits.labels))
        except BaseModelError as exc:
            typer.echo(f"error: --fine-tuned {exc}", err=True)
            raise typer.Exit(2)
    update = {k: v for k, v in {"seed": seed, "method": method.value if method else None}.items() if v is not None}
    update.update({} if prune else {"prune": False})
    update.update({} if int8 else {"int8": False})
    if casing is not None:
        update["casing"] = {**PROFILES[profile].casing, splits.task: casing}
    if lora_rank is not None or lora_targets:
        if method is not Method.lora:
            raise typer.BadParameter("--lora-rank/--lora-targets go with --method lora", param_hint="--lora-rank")
        lora = PROFILES[profile].lora.model_copy(update={k: v for k, v in {
            "rank": lora_rank, "alpha": None if lora_rank is None else 2.0 * lora_rank,
            "target_modules": [t.strip() for t in lora_targets.split(",") if t.strip()] if lora_targets else None,
        }.items() if v is not None})
        update["lora"] = lora
    chosen = PROFILES[profile].model_copy(update=update)
    try:
        manifest = run_build(splits, name, models_dir, chosen, work_dir, reuse_fine_tuned, base,
                             fine_tuned=fine_tuned is not None)
    except AccuracyGateError as exc:
        typer.echo(f"error: accuracy gate failed, {name} not installed: {exc}\nreport: {exc.report['report_path']}\n"
                   f"what to do: read the report's per_stage drops, then rebuild with another --seed "
                   f"(this one: {chosen.seed}) or a longer budget (--profile full); models that passed are "
                   f"unaffected", err=True)
        raise typer.Exit(3)
    if manifest:  # empty on the other ranks of a distributed build: rank 0 wrote and reported it
        typer.echo(json.dumps(manifest["summary"], indent=2))


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="overrides PRESSO_HOST"),
    port: Optional[int] = typer.Option(None, help="overrides PRESSO_PORT"),
    models_dir: Optional[Path] = typer.Option(None, help="overrides PRESSO_MODELS_DIR"),
) -> None:
    """Serve every artifact under the models directory (settings from PRESSO_* variables)."""
    from presso.service.settings import Settings
    from presso.service.server import run

    from pydantic import ValidationError

    overrides = {k: v for k, v in {"host": host, "port": port, "models_dir": models_dir}.items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for error in exc.errors():
            where = f"PRESSO_{str(error['loc'][0]).upper()}: " if error["loc"] else ""  # cross-field checks have none
            typer.echo(f"error: {where}{error['msg']}", err=True)
        raise typer.Exit(2)
    if not any(Path(settings.models_dir).glob("*/manifest.json")):
        typer.echo(f"error: no models to serve in {settings.models_dir} (no */manifest.json); build one first: "
                   f"presso build ner (or sentiment, or --task with your data)", err=True)
        raise typer.Exit(2)
    from presso.core.manifest import ArtifactError
    from presso.service.routing import RoutesError

    try:
        run(settings)
    except (ArtifactError, RoutesError) as exc:  # a broken artifact or routes file, a graph that fails to
        typer.echo(f"error: {exc}", err=True)    # load, reference outputs that differ
        raise typer.Exit(2) from None


@app.command("eval")
def eval_http(
    dataset: Builtin = typer.Argument(..., help="evaluate on this built-in test split"),
    url: str = typer.Option("http://127.0.0.1:8000", help="base URL of a running Presso service"),
    model: Optional[str] = typer.Option(None, help="model name (default: the service's only model of the task)"),
    limit: Optional[int] = typer.Option(None, help="evaluate on the first N test examples only"),
    batch: int = typer.Option(32, help="texts per HTTP request"),
    concurrency: int = typer.Option(4, help="requests in flight"),
    output: Optional[Path] = typer.Option(None, help="write the result JSON here"),
) -> None:
    """Score a running service over HTTP on a held-out test split (entity F1 / accuracy)."""
    _logging()
    from presso.http_eval import evaluate_over_http

    result = evaluate_over_http(dataset.value, url, model, limit, batch, concurrency)
    text = json.dumps(result, indent=2)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    typer.echo(text)


@app.command()
def calibrate(
    route: str = typer.Argument(..., help="a cascade route of the routes file"),
    routes_file: Optional[Path] = typer.Option(None, help="the routes file to rewrite (default: PRESSO_ROUTES_FILE)"),
    models_dir: Optional[Path] = typer.Option(None, help="artifacts the route names (default: PRESSO_MODELS_DIR)"),
    dataset: Optional[Builtin] = typer.Option(None, help="texts: this built-in dataset's validation split"),
    texts: Optional[Path] = typer.Option(None, help="texts: one per line, or .jsonl with a 'text' field"),
    limit: Optional[int] = typer.Option(None, min=1, help="use the first N texts only"),
    target: float = typer.Option(0.995, min=0.0, max=1.0, help="least share of texts answered exactly as the "
                                 "route's last model answers them"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the thresholds, leave the file as it is"),
) -> None:
    """Choose a cascade's thresholds on validation texts and write them into the routes file, with
    the measured agreement with the last model and the share of texts each step answers."""
    _logging("WARNING")
    from presso.calibrate import CalibrationInputError, builtin_validation_texts, calibrate as run_calibration, read_texts
    from presso.core.manifest import ArtifactError
    from presso.service.routing import RoutesError
    from presso.service.settings import Settings

    if (dataset is None) == (texts is None):
        typer.echo("error: give the texts with --dataset (a built-in validation split) or --texts FILE", err=True)
        raise typer.Exit(2)
    settings = Settings()
    routes_file = routes_file or settings.routes_file
    if routes_file is None:
        typer.echo("error: no routes file: give --routes-file or set PRESSO_ROUTES_FILE", err=True)
        raise typer.Exit(2)
    try:
        chosen = builtin_validation_texts(dataset.value) if dataset else read_texts(texts)
        source = f"{dataset.value} validation split" if dataset else str(texts)
        result = run_calibration(route, routes_file, models_dir or settings.models_dir, chosen[:limit], target,
                                 source, write=not dry_run)
    except (RoutesError, CalibrationInputError, ArtifactError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"route": route, "thresholds": result.thresholds, "agreement": result.agreement,
                           "target": result.target, "share_answered": result.shares, "examples": result.examples,
                           "written": None if dry_run else str(routes_file)}, indent=2))


bench = typer.Typer(help="Benchmarks that write JSON (and plots) under reports/.", no_args_is_help=True)
app.add_typer(bench, name="bench")


@bench.command("autoscale")
def bench_autoscale(
    models_dir: Path = typer.Option(Path("models"), help="artifacts the two replicas serve"),
    out_dir: Path = typer.Option(Path("reports"), help="where autoscale.json and autoscale.png go"),
    idle_s: float = typer.Option(45, help="idle seconds before the load step"),
    step_s: float = typer.Option(60, help="seconds of load"),
    cooldown_s: float = typer.Option(240, help="idle seconds after the load step"),
    load_factor: float = typer.Option(5.0, help="step load (concurrent clients) as a multiple of one replica's "
                                      "planned load (the per-pod target)"),
) -> None:
    """Two replicas + real Prometheus + load step; replays the HPA on the KEDA/adapter query."""
    _logging()
    from presso.bench.autoscale import run as run_autoscale

    report = run_autoscale(models_dir, out_dir, idle_s, step_s, cooldown_s, load_factor)
    typer.echo(json.dumps(report["summary"], indent=2))


@bench.command("serve")
def bench_serve(
    models_dir: Path = typer.Option(Path("models"), help="directory of model artifacts"),
    model: str = typer.Option("ner", help="token-classification artifact to drive over /ner"),
    torch_model: Optional[Path] = typer.Option(None, help="fp32 PyTorch model for baseline C (e.g. "
                                               "<work-dir>/fp32 of `presso build --work-dir`); default: the base "
                                               "encoder with an untrained head"),
    out_dir: Path = typer.Option(Path("reports"), help="where serve-bench.json and serve-bench.png go"),
    duration_s: float = typer.Option(15, help="measured seconds per concurrency level"),
    warmup_s: float = typer.Option(3, help="unmeasured seconds before each level"),
    max_requests: int = typer.Option(200_000, help="at most this many requests per level"),
) -> None:
    """Presso with and without dynamic batching vs a Hugging Face pipeline server vs offline ONNX Runtime."""
    _logging("WARNING")
    from presso.bench.serve import run as run_serve

    report = run_serve(models_dir, model, out_dir, torch_model, duration_s, warmup_s, max_requests)
    typer.echo(json.dumps({"ratios": report["ratios"], "targets_met": report["targets_met"]}, indent=2))


@bench.command("peers")
def bench_peers(
    models_dir: Path = typer.Option(Path("models"), help="directory of model artifacts"),
    model: str = typer.Option("sentiment", help="classification artifact every server runs"),
    work_dir: Path = typer.Option(Path("work/sentiment"), help="that artifact's build work directory (presso build "
                                  "sentiment --work-dir ...): its fp32/ checkpoint is what infinity's torch engine "
                                  "and the pipeline baseline serve"),
    venv: Path = typer.Option(Path("work/infinity-venv"), help="infinity-emb's own virtual environment (created "
                              "and installed on first use)"),
    out_dir: Path = typer.Option(Path("reports"), help="where peers.json and peers.png go"),
    duration_s: float = typer.Option(15, help="measured seconds per concurrency level"),
    warmup_s: float = typer.Option(3, help="unmeasured seconds before each level"),
) -> None:
    """Presso vs infinity-emb (same ONNX file; torch on the fp32 checkpoint) vs a pipeline server, over HTTP."""
    _logging("WARNING")
    from presso.bench.peers import run as run_peers
    from presso.core.manifest import ArtifactError

    try:
        report = run_peers(models_dir, model, work_dir / "fp32", work_dir / "pruned"
                           if (work_dir / "pruned" / "config.json").exists() else None, out_dir, venv, duration_s,
                           warmup_s)
    except (FileNotFoundError, ValueError, RuntimeError, ArtifactError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"ratios": report["ratios"], "targets_met": report["targets_met"]}, indent=2))


@bench.command("scaling")
def bench_scaling(
    models_dir: Path = typer.Option(Path("models"), help="directory of model artifacts"),
    model: str = typer.Option("ner", help="token-classification artifact to drive over /ner"),
    out_dir: Path = typer.Option(Path("reports"), help="where serve-scaling.json and serve-scaling.png go"),
    duration_s: float = typer.Option(10, help="measured seconds per length and core set"),
    warmup_s: float = typer.Option(2, help="unmeasured seconds before each"),
) -> None:
    """Cost over HTTP at 16-1,024 tokens per text on 1 and 2 cores, and the model's roofline point at 8 x 128."""
    _logging("WARNING")
    from presso.bench.scaling import run as run_scaling

    report = run_scaling(models_dir, model, out_dir, duration_s, warmup_s)
    typer.echo(json.dumps({"two_vs_one_core": report["two_vs_one_core"],
                           "fraction_of_peak_8x128": report["roofline"]["fraction_of_peak"],
                           "matmul_share_8x128": report["roofline"]["profile"]["matmul_share"]}, indent=2))


@bench.command("soak")
def bench_soak(
    models_dir: Path = typer.Option(Path("models"), help="directory of model artifacts (an NER and a "
                                    "classification model)"),
    out_dir: Path = typer.Option(Path("reports"), help="where soak.json and soak.png go"),
    segments: int = typer.Option(10, min=2, help="measured wrk runs, back to back"),
    segment_s: float = typer.Option(60, help="seconds per segment"),
    load_factor: float = typer.Option(0.7, min=0.05, max=1.0, help="target share of the measured capacity"),
    capacity_s: float = typer.Option(20, help="seconds of the closed-loop capacity run"),
) -> None:
    """Mixed /ner + /classify traffic of random lengths at ~70% of capacity: errors, p99, memory growth."""
    _logging("WARNING")
    from presso.bench.soak import run as run_soak

    report = run_soak(models_dir, out_dir, segments, segment_s, load_factor, capacity_s)
    typer.echo(json.dumps(report["summary"], indent=2))


@bench.command("model")
def bench_model(
    work_dir: Path = typer.Option(Path("work"), help="holds <task>/ build work directories "
                                  "(presso build <task> --work-dir work/<task>)"),
    models_dir: Path = typer.Option(Path("models"), help="the shipped artifacts"),
    out_dir: Path = typer.Option(Path("reports"), help="where model-bench.json/.md/.png go"),
    runs: int = typer.Option(20, help="timed runs per latency measurement"),
    scale: bool = typer.Option(True, "--scale/--no-scale", help="also measure full-size random-weight shapes "
                               "(BERT-base, DeBERTa-v3-small): PyTorch fp32 vs pruned INT8, speed only"),
    only_scale: bool = typer.Option(False, "--only-scale", help="measure only the scale section and update it in "
                                    "an existing model-bench.json"),
) -> None:
    """PyTorch fp32 vs ONNX fp32 (plain, fused) vs pruned vs INT8 (dynamic, static): size, speed, accuracy."""
    _logging()
    from presso.bench.model import run as run_model
    from presso.bench.model import update_scale

    if only_scale:
        report = update_scale(out_dir, runs=min(runs, 10))
    else:
        report = run_model(work_dir, models_dir, out_dir, runs, scale=scale)
    typer.echo(json.dumps(report["summary"], indent=2))


def _labelled_paths(values: list[str], option: str) -> dict[str, Path]:
    out = {}
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or not label or not Path(path).is_file():
            raise typer.BadParameter(f"expected LABEL=FILE with an existing file, got {value!r}", param_hint=option)
        out[label] = Path(path)
    return out


@bench.command("ner-quality")
def bench_ner_quality(
    manifest: list[str] = typer.Option(..., help="LABEL=PATH of an NER artifact's manifest.json (repeatable)"),
    http_eval: list[str] = typer.Option([], help="LABEL=PATH of `presso eval ner --output` for that build"),
    out_dir: Path = typer.Option(Path("reports"), help="where ner-quality.json and ner-quality.md go"),
) -> None:
    """Test entity F1 (micro, per type) of every stage, Viterbi vs argmax decoding, and over HTTP."""
    from presso.bench.quality import run as run_quality

    from presso.core.manifest import ArtifactError

    try:
        report = run_quality(_labelled_paths(manifest, "--manifest"), _labelled_paths(http_eval, "--http-eval"),
                             out_dir)
    except ArtifactError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(report["summary"], indent=2))


@bench.command("lora")
def bench_lora(
    build: list[str] = typer.Option(..., help="TASK:METHOD=PATH of a build's manifest.json, TASK ner or classify, "
                                    "METHOD full or lora (the summary's pair; repeat for each of the four), or "
                                    "lora-<variant> for other LoRA settings listed beside them"),
    out_dir: Path = typer.Option(Path("reports"), help="where lora.json and lora.md go"),
    probe_steps: int = typer.Option(30, min=5, help="optimizer steps of each side-by-side cost probe"),
) -> None:
    """LoRA vs full fine-tuning: test metric of fp32 and shipped models, trainable parameters, time, memory."""
    from presso.bench.lora import run as run_lora
    from presso.core.manifest import ArtifactError

    manifests = {}
    for value in build:
        key, sep, path = value.partition("=")
        task, colon, method = key.partition(":")
        if not sep or not colon or task not in ("ner", "classify") or not (method in ("full", "lora") or
                                                                            method.startswith("lora-")) \
                or not Path(path).is_file():
            raise typer.BadParameter(f"expected TASK:METHOD=FILE (ner|classify, full|lora|lora-<variant>, an "
                                     f"existing file), got "
                                     f"{value!r}", param_hint="--build")
        manifests[(task, method)] = Path(path)
    try:
        report = run_lora(manifests, out_dir, probe_steps)
    except (ValueError, ArtifactError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(report["summary"], indent=2))


@bench.command("routes")
def bench_routes(
    dataset: Builtin = typer.Argument(Builtin.sentiment, help="built-in dataset: its validation split calibrates, "
                                      "its test split measures"),
    models_dir: Path = typer.Option(Path("models"), help="directory holding both artifacts"),
    small: str = typer.Option("sentiment", help="the cheap first step (the shipped pruned model)"),
    large: str = typer.Option("sentiment-large", help="the accurate last step (presso build --no-prune)"),
    target: float = typer.Option(0.995, min=0.0, max=1.0, help="calibration: agreement with the large model"),
    batch: int = typer.Option(8, min=1, help="texts per HTTP request"),
    concurrency: int = typer.Option(16, min=1, help="requests in flight"),
    limit: Optional[int] = typer.Option(None, min=1, help="test on the first N examples only"),
    calibration_limit: Optional[int] = typer.Option(None, min=1, help="calibrate on the first N validation texts"),
    out_dir: Path = typer.Option(Path("reports"), help="where the report's .json and .png go"),
    report: str = typer.Option("routes", help="the report's file name, without .json / .png"),
) -> None:
    """A confidence cascade (small -> large, calibrated) against each model alone, over HTTP (needs wrk)."""
    _logging("WARNING")
    from presso.bench.routes import run as run_routes
    from presso.bench.wrk import wrk_binary
    from presso.calibrate import CalibrationInputError
    from presso.core.manifest import ArtifactError
    from presso.service.routing import RoutesError

    try:
        wrk_binary()
        summary = run_routes(models_dir, small, large, dataset.value, out_dir, batch, concurrency, target,
                             limit=limit, calibration_limit=calibration_limit, report_name=report)["summary"]
    except (RoutesError, CalibrationInputError, ArtifactError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, indent=2))


@bench.command("cascade-bound")
def bench_cascade_bound(
    dataset: Builtin = typer.Argument(..., help="built-in dataset: validation and test splits, labelled"),
    step: list[Path] = typer.Option(..., "--step", help="an artifact folder, once per cascade step, cheapest first"),
    max_gap: float = typer.Option(0.2, min=0.0, max=100.0, help="most points the cascade may lose against the "
                                  "last model"),
    out_dir: Path = typer.Option(Path("reports"), help="where the report goes"),
    report: str = typer.Option("cascade-bound", help="the report's file name, without .json"),
) -> None:
    """The most a cascade of these models can gain: every threshold offline, each model's cost per
    token measured in the same run (no server)."""
    _logging("WARNING")
    from presso.bench.cascade_bound import run as run_bound
    from presso.core.manifest import ArtifactError

    try:
        summary = run_bound(dataset.value, step, out_dir, max_gap, report)["summary"]
    except (ArtifactError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary, indent=2))


@bench.command("experts")
def bench_experts(
    models_dir: Path = typer.Option(Path("models"), help="directory holding the four artifacts"),
    news: str = typer.Option("ner", help="the news expert (presso build ner)"),
    tweets: str = typer.Option("wnut", help="the tweet expert (presso build wnut)"),
    union: str = typer.Option("news-tweets", help="one model on both corpora (presso build news-tweets)"),
    router: str = typer.Option("domains", help="the router (presso build domains)"),
    out_dir: Path = typer.Option(Path("reports"), help="where experts.json and experts.md go"),
) -> None:
    """Domain experts behind a top-k router vs each expert alone, a union model and oracle routing."""
    _logging("WARNING")
    from presso.bench.experts import run as run_experts
    from presso.core.manifest import ArtifactError
    from presso.service.routing import RoutesError

    try:
        report = run_experts(models_dir, out_dir, news, tweets, union, router)
    except (ValueError, ArtifactError, RoutesError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(report["summary"], indent=2))


@bench.command("arch")
def bench_arch(
    out_dir: Path = typer.Option(Path("reports"), help="where arch-support.json and .md go"),
    from_results: Optional[Path] = typer.Option(None, help="render the results a test run saved "
                                                "(PRESSO_ARCH_RESULTS=DIR pytest tests/test_arch.py) instead of "
                                                "probing now"),
) -> None:
    """Support matrix: a tiny random model of every architecture family through fine-tuning steps,
    pruning, export, fusion, INT8 and serving (no downloads; a few minutes)."""
    _logging("WARNING")
    from presso.bench.arch import run as run_arch

    try:
        report = run_arch(out_dir, results_dir=from_results)
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    failed = [(r["family"], r["task"], s) for r in report["results"] for s, c in r["stages"].items()
              if c.startswith("failed")]
    typer.echo((out_dir / "arch-support.md").read_text())
    if failed:
        typer.echo(f"error: stages failed: {failed}", err=True)
        raise typer.Exit(1)


@app.command()
def report(models_dir: Path = typer.Argument(Path("models"), help="directory of model artifacts")) -> None:
    """Print each artifact's stage metrics, sizes and latencies as markdown."""
    from presso.report import render

    if not any(Path(models_dir).glob("*/manifest.json")):
        typer.echo(f"error: no model artifacts in {models_dir} (no */manifest.json); build one first: "
                   f"presso build ner", err=True)
        raise typer.Exit(2)
    from presso.core.manifest import ArtifactError

    try:
        typer.echo(render(models_dir))
    except ArtifactError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


if __name__ == "__main__":
    app()

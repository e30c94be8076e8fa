"""The data plane: models, limits, tokenization, dynamic batching, assembly and reload, behind
one object that any transport (REST today; e.g. the Open Inference Protocol or a routing policy
tomorrow) calls. It raises only :mod:`presso.service.errors`; it knows nothing about HTTP.

Layers: transport (:mod:`presso.service.api`) -> data plane (here) -> scheduling
(:mod:`presso.service.batching`) -> compute (:mod:`presso.service.registry`, ONNX Runtime).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from presso.core.manifest import ArtifactError, Task
from presso.core.runtime import RuntimeSetupError, onnxruntime_distribution, select_providers
from presso.service import errors
from presso.service.batching import (BatchLimits, BatcherClosed, CoreSlots, DeadlineExceeded, DynamicBatcher,
                                     InferenceError)
from presso.service.batching import Overloaded as QueueFull
from presso.service.memory import release_memory
from presso.service.metrics import Metrics
from presso.service.registry import LoadedModel, TooManyTokens, load_models
from presso.service.settings import Settings, available_cores

log = logging.getLogger(__name__)

INLINE_TOKENIZE_CHARS = 2000  # requests up to this size are tokenized on the event loop
RELOAD_ATTEMPTS = 3  # a request that meets a reload this many times in a row is refused (503)

Disconnected = Callable[[], Awaitable[None]]  # returns when the client has gone away


def shorten(value: str, limit: int = 100) -> str:
    """``repr`` of a client-supplied name, cut to ``limit`` characters (an error never echoes megabytes)."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"


def model_options(settings: Settings) -> dict:
    """:class:`LoadedModel` keyword arguments from the settings (ONNX Runtime providers chosen here)."""
    return {"providers": select_providers(onnxruntime_distribution()), "intra_op_threads": settings.intra_op_threads,
            "stride_tokens": settings.ner_window_stride_tokens, "spinning": settings.intra_op_spinning,
            "alone_session": settings.all_cores_when_idle}


class DataPlane:
    """Everything between a parsed request and its results.

    Lifecycle (the transport's middleware and the server read these): ``ready`` once every model
    is loaded and warmed up; ``draining`` after SIGTERM (new requests 503); ``active`` counts
    requests being served; ``last_request_at`` (monotonic seconds) the latest arrival.

    Args:
        settings: the service's settings.
        metrics: where batching and refusals are counted.
        models: already loaded models (tests); None loads ``settings.models_dir`` at :meth:`start`.
    """

    def __init__(self, settings: Settings, metrics: Metrics, models: dict[str, LoadedModel] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self._given = models
        self.models: dict[str, LoadedModel] = {}
        self.batchers: dict[str, DynamicBatcher] = {}
        self.ready = False
        self.draining = False
        self.active = 0
        self.last_request_at = 0.0
        self._large_requests = asyncio.Semaphore(available_cores())
        self.cores = CoreSlots(settings.inference_workers())  # every model's batches share the cores
        self._reloading: dict[str, asyncio.Lock] = {}

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load (unless given), warm up and start a batcher per model; then ready.

        Raises:
            ArtifactError: no artifacts or a broken one.
        """
        if self._given is None:
            self.models = await asyncio.to_thread(load_models, self.settings.models_dir,
                                                  **model_options(self.settings))
        else:
            self.models = self._given
        for name, model in self.models.items():
            self.batchers[name] = await self._start_serving(model)
        self.ready = True
        self.metrics.ready.set(1)
        log.info("ready: %s", {n: m.task.value for n, m in self.models.items()})

    async def stop(self) -> None:
        self.ready = False
        self.metrics.ready.set(0)
        await asyncio.gather(*(b.stop() for b in self.batchers.values()))

    def begin_drain(self) -> None:
        self.draining = True
        self.metrics.ready.set(0)

    @property
    def serving(self) -> bool:
        return self.ready and not self.draining

    async def _start_serving(self, model: LoadedModel) -> DynamicBatcher:
        """A started batcher for ``model``, after warm-up (both sessions, outside the batcher, so
        metrics start at zero)."""
        if self.settings.warmup:
            items = model.tokenize(["Presso warms up in Paris."])[0]
            await asyncio.to_thread(model.infer, items)
            await asyncio.to_thread(model.infer, items, alone=True)
        self.metrics.register_model(model.name)
        batcher = DynamicBatcher(model.name, model.infer, BatchLimits.from_settings(self.settings),
                                 cost=lambda item: item.tokens, slots=self.cores, metrics=self.metrics,
                                 infer_alone=(lambda items: model.infer(items, alone=True))
                                 if self.settings.all_cores_when_idle else None)
        batcher.start()
        return batcher

    # -- inference --------------------------------------------------------------------------------

    def pick(self, task: Task, requested: str | None) -> LoadedModel:
        """The model that serves ``task``: the one named, or the only one loaded for it.

        Raises:
            NotReady, UnknownModel, WrongTask, NoModelForTask, ModelRequired.
        """
        if not self.ready:
            raise errors.NotReady("models are loading or the service is shutting down")
        if requested is not None:
            model = self.models.get(requested)
            if model is None:
                raise errors.UnknownModel(f"no model named {shorten(requested)}; loaded: {sorted(self.models)}",
                                          "model")
            if model.task != task:
                raise errors.WrongTask(f"model {requested!r} is {model.task.value}, this endpoint needs "
                                       f"{task.value}", "model")
            return model
        candidates = sorted(n for n, m in self.models.items() if m.task == task)
        if not candidates:
            raise errors.NoModelForTask(f"no {task.value} model is loaded", "model")
        if len(candidates) > 1:
            raise errors.ModelRequired(f"several {task.value} models are loaded, choose one with 'model': "
                                       f"{candidates}", "model")
        return self.models[candidates[0]]

    def check_texts(self, texts: list[str], single: bool) -> None:
        """Per-request limits: number of texts, characters per text, valid Unicode.

        Raises:
            TooManyTexts, TextTooLong, InvalidText.
        """
        s = self.settings
        if len(texts) > s.max_texts_per_request:
            raise errors.TooManyTexts(f"{len(texts)} texts, at most {s.max_texts_per_request} per request", "texts")
        for i, text in enumerate(texts):
            field = "text" if single else f"texts.{i}"
            if len(text) > s.max_text_chars:
                raise errors.TextTooLong(f"text has {len(text)} characters, at most {s.max_text_chars}", field)
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:  # a lone surrogate, e.g. JSON "\ud800"
                    raise errors.InvalidText(f"text is not valid Unicode: {exc.reason} at character {exc.start}",
                                             field) from None

    async def infer(self, task: Task, texts: list[str], *, single: bool = False, model: str | None = None,
                    timeout_ms: float | None = None, arrived_at: float | None = None,
                    disconnected: Disconnected | None = None,
                    with_confidence: bool = False, partials: bool = False) -> tuple[LoadedModel, list]:
        """Results of ``texts`` in input order, each the task plug-in's fields.

        Args:
            task: the endpoint's task.
            texts: the request's texts; ``single``: it had one ``text`` (fields are named ``text``,
                not ``texts.<i>``).
            model: the model asked for, or None for the only one of the task.
            timeout_ms: the request's deadline (default ``settings.request_timeout_ms``), counted
                from ``arrived_at`` (monotonic seconds; default now).
            disconnected: awaitable factory that returns when the client leaves; its queued
                sequences are then dropped before inference (as TEI does).
            with_confidence: each result also has ``confidence`` in [0, 1] (the task's definition;
                what cascades compare with their thresholds).
            partials: each text's partial results (one per sequence, the task plug-in's ``decode``)
                instead of its answer: what expert routes mix (:meth:`TaskPlugin.combine`).

        Raises:
            Any :mod:`presso.service.errors` error (never a batcher's or ONNX Runtime's own).
        """
        timeout_ms = timeout_ms or self.settings.request_timeout_ms
        deadline = (time.monotonic() if arrived_at is None else arrived_at) + timeout_ms / 1000.0
        for _attempt in range(RELOAD_ATTEMPTS):
            loaded = self.pick(task, model)
            batcher = self.batchers[loaded.name]  # the pair is swapped together on reload
            try:
                return loaded, await self._run_on(loaded, batcher, texts, single, deadline, timeout_ms, disconnected,
                                                  with_confidence, partials)
            except BatcherClosed:
                if self.draining or self.batchers.get(loaded.name) is batcher:
                    raise errors.ShuttingDown(f"model {loaded.name} is shutting down") from None
                # the model was reloaded while this request was being tokenized: run it on the new one
        raise errors.ModelReplaced(f"model {loaded.name} was replaced repeatedly; retry")

    async def _tokenize(self, model: LoadedModel, texts: list[str], single: bool, deadline: float,
                        expired, disconnected: Disconnected | None = None) -> list[list]:
        limit = self.settings.max_queued_tokens
        try:  # a request over the queue's token bound could never be admitted, or would lock others out
            if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
                return model.tokenize(texts, limit)  # cheaper than a thread hop
            # off the event loop; one large request per core at a time bounds tokenization memory;
            # a request whose client leaves while it waits for its turn is dropped then (ClientGone)
            await self._large_turn(deadline, expired, disconnected)
            try:
                return await asyncio.to_thread(model.tokenize, texts, limit)
            finally:
                self._large_requests.release()
        except TooManyTokens as exc:
            raise errors.TooManyTokens(f"request has {exc}, at most {limit} (PRESSO_MAX_QUEUED_TOKENS) per request",
                                       "text" if single else "texts") from None

    async def _large_turn(self, deadline: float, expired, disconnected: Disconnected | None) -> None:
        """Wait for one of the large-request tokenization slots, until ``deadline`` or until the
        client leaves; a slot granted to a waiter that gave up is given back.

        Raises:
            errors.Expired: the deadline passed first.
            errors.ClientGone: the client left first.
        """
        acquire = asyncio.ensure_future(self._large_requests.acquire())
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await unless_disconnected(asyncio.shield(acquire), disconnected)
        except BaseException as exc:
            if acquire.done() and not acquire.cancelled() and acquire.exception() is None:
                self._large_requests.release()  # granted as the waiter gave up
            else:
                acquire.cancel()  # asyncio.Semaphore gives back a grant its cancelled waiter had
            if isinstance(exc, TimeoutError):
                raise expired("waiting to be tokenized behind other large requests") from None
            raise

    async def _run_on(self, model: LoadedModel, batcher: DynamicBatcher, texts: list[str], single: bool,
                      deadline: float, timeout_ms: float, disconnected: Disconnected | None,
                      with_confidence: bool = False, raw: bool = False) -> list:
        self.check_texts(texts, single)

        def expired(where: str) -> errors.Expired:
            self.metrics.timed_out.labels(model=model.name).inc()
            return errors.Expired(f"deadline passed {where} (timeout_ms {timeout_ms:g}, counted from arrival)",
                                  "timeout_ms")

        if time.monotonic() >= deadline:
            raise expired("before tokenization (the body took that long to arrive)")
        sequences = await self._tokenize(model, texts, single, deadline, expired, disconnected)
        if time.monotonic() >= deadline:
            raise expired("during tokenization")
        try:
            model.plugin.check([[item.encoded for item in seqs] for seqs in sequences], self.settings,
                               model.encoder.max_seq_len)
        except errors.ServiceError as exc:
            if single and exc.field == "texts.0":
                exc.field = "text"
            raise
        flat = [item for windows in sequences for item in windows]
        try:
            outputs = await unless_disconnected(batcher.submit(flat, deadline), disconnected)
        except QueueFull as exc:
            self.metrics.rejected.labels(model=model.name).inc()
            raise errors.Overloaded(str(exc), retry_after_s=exc.retry_after_s) from None
        except DeadlineExceeded as exc:
            self.metrics.timed_out.labels(model=model.name).inc()
            raise errors.Expired(f"{exc} (timeout_ms {timeout_ms:g})", "timeout_ms") from None
        except InferenceError as exc:
            raise errors.InferenceFailed(str(exc)) from None
        results, at = [], 0
        for text, windows in zip(texts, sequences):
            mine = outputs[at: at + len(windows)]
            if raw:
                results.append(mine)
            elif with_confidence:
                result, confidence = model.assemble_with_confidence(text, mine)
                results.append({**result, "confidence": confidence})
            else:
                results.append(model.assemble(text, mine))
            at += len(windows)
        return results

    # -- models -----------------------------------------------------------------------------------

    def describe(self) -> list[dict]:
        return [m.describe() for m in self.models.values()]

    async def reload(self, name: str) -> dict:
        """Load and validate the artifact now in the model's folder (manifest, checksums,
        reference outputs, name and task unchanged), warm it up, then swap it in: new requests use
        it at once, requests already queued finish on the old version.

        Returns:
            ``{"model", "previous_version", "version"}``.

        Raises:
            NotReady, PathUnknownModel, ReloadInProgress, InvalidArtifact (the old version keeps serving).
        """
        if not self.serving:
            raise errors.NotReady("models are loading or the service is shutting down")
        old = self.models.get(name)
        if old is None:
            raise errors.PathUnknownModel(f"no model named {shorten(name)}; loaded: {sorted(self.models)}", "name")
        lock = self._reloading.setdefault(name, asyncio.Lock())
        if lock.locked():
            raise errors.ReloadInProgress(f"model {name!r} is already being reloaded", "name")
        async with lock:
            try:
                new = await asyncio.to_thread(LoadedModel, old.path, **model_options(self.settings))
                if (new.name, new.task) != (old.name, old.task):
                    raise ArtifactError(f"{old.path} now holds {new.name!r} ({new.task.value}), not {name!r} "
                                        f"({old.task.value})")
                batcher = await self._start_serving(new)
            except Exception as exc:  # whatever is wrong with the new files, the old version keeps serving
                reason = str(exc) if isinstance(exc, (ArtifactError, RuntimeSetupError)) else f"{type(exc).__name__}: {exc}"
                log.warning("reload of %s refused: %s", name, reason)
                raise errors.InvalidArtifact(f"{reason[:500]}; still serving version {old.version}", "name") from None
            previous = self.batchers[name]
            self.models[name], self.batchers[name] = new, batcher  # one step: no request sees a mix
            log.info("model %s: version %s replaced %s", name, new.version, old.version)
        await previous.stop(drain_s=self.settings.shutdown_grace_s)
        answer = {"model": name, "previous_version": old.version, "version": new.version}
        del old, previous
        await asyncio.to_thread(release_memory)
        return answer


async def unless_disconnected(work: Awaitable, disconnected: Disconnected | None):
    """Await ``work``, cancelling it if ``disconnected()`` returns first.

    Raises:
        ClientGone: the client closed the connection before ``work`` finished.
    """
    if disconnected is None:
        return await work
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()  # the client left, or this handler itself was cancelled
    if task in done:
        return task.result()
    raise errors.ClientGone("the client closed the connection; its texts were dropped")

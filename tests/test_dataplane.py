"""The data plane without any transport: results and domain errors (no HTTP statuses), so another
protocol can sit on it unchanged."""

from __future__ import annotations

import asyncio
import time

import pytest

from presso.core.manifest import Task
from presso.service import errors
from presso.service.dataplane import DataPlane
from presso.service.metrics import Metrics
from presso.service.registry import load_models
from presso.service.settings import available_cores
from tests.conftest import make_settings


def run(coro):
    return asyncio.run(coro)


async def started(models_dir, **overrides) -> DataPlane:
    settings = make_settings(models_dir, **overrides)
    plane = DataPlane(settings, Metrics(), load_models(models_dir, ["CPUExecutionProvider"], 1))
    await plane.start()
    return plane


def test_results_in_input_order_and_domain_errors(fake_models_dir):
    async def scenario():
        plane = await started(fake_models_dir, max_texts_per_request=4)
        try:
            model, results = await plane.infer(Task.TOKEN_CLASSIFICATION, ["john smith lives in paris", "the day"])
            assert model.name == "fake-ner"
            assert [e["text"] for e in results[0]["entities"]] == ["john smith", "paris"]
            assert results[1]["entities"] == []
            _, (sentiment,) = await plane.infer(Task.SEQUENCE_CLASSIFICATION, ["a good day"], single=True)
            assert sentiment["label"] == "positive"
            with pytest.raises(errors.UnknownModel) as unknown:
                await plane.infer(Task.TOKEN_CLASSIFICATION, ["x"], model="nope")
            assert unknown.value.field == "model" and unknown.value.kind == "unknown_model"
            with pytest.raises(errors.WrongTask):
                await plane.infer(Task.TOKEN_CLASSIFICATION, ["x"], model="fake-sentiment")
            with pytest.raises(errors.TooManyTexts) as many:
                await plane.infer(Task.TOKEN_CLASSIFICATION, ["x"] * 5)
            assert many.value.field == "texts"
            with pytest.raises(errors.InvalidText) as bad:
                await plane.infer(Task.TOKEN_CLASSIFICATION, ["ok", "\ud800"])
            assert bad.value.field == "texts.1"
            with pytest.raises(errors.Expired):
                await plane.infer(Task.TOKEN_CLASSIFICATION, ["x"], timeout_ms=1, arrived_at=time.monotonic() - 1.0)
            with pytest.raises(errors.PathUnknownModel) as reload_unknown:
                await plane.reload("nope")
            assert reload_unknown.value.location == "path"
        finally:
            await plane.stop()

    run(scenario())


def test_a_client_that_leaves_gets_its_work_dropped(fake_models_dir):
    async def scenario():
        plane = await started(fake_models_dir)
        try:
            async def gone() -> None:
                return None

            cores = next(iter(plane.batchers.values()))._slots
            taken = cores.take_all()  # every core busy: the texts queue (idle cores would run them at once)
            try:
                with pytest.raises(errors.ClientGone):
                    await plane.infer(Task.TOKEN_CLASSIFICATION, ["john smith"] * 3, disconnected=gone)
            finally:
                cores.running -= 1
                cores.release(taken)
        finally:
            await plane.stop()

    run(scenario())


def test_not_ready_before_start(fake_models_dir):
    plane = DataPlane(make_settings(fake_models_dir), Metrics(), {})
    with pytest.raises(errors.NotReady):
        plane.pick(Task.TOKEN_CLASSIFICATION, None)


def test_a_large_request_waiting_for_its_tokenization_turn_leaves_with_its_client_or_deadline(fake_models_dir):
    """Every large-request slot busy: a waiter whose client leaves is dropped at once (ClientGone),
    one whose deadline passes gets Expired, and neither keeps a slot; the next one runs."""
    async def scenario():
        plane = await started(fake_models_dir)
        slots = plane._large_requests
        held = 0
        try:
            while not slots.locked():  # every core busy tokenizing someone else's large request
                await slots.acquire()
                held += 1
            text = "john smith lives in paris . " * 100  # over the inline tokenization size

            async def gone():
                await asyncio.sleep(0.05)

            started_at = time.monotonic()
            with pytest.raises(errors.ClientGone):
                await plane.infer(Task.TOKEN_CLASSIFICATION, [text], disconnected=gone)
            with pytest.raises(errors.Expired, match="behind other large requests"):
                await plane.infer(Task.TOKEN_CLASSIFICATION, [text], timeout_ms=50)
            assert time.monotonic() - started_at < 5
            for _ in range(held):
                slots.release()
            held = 0
            _, (result,) = await plane.infer(Task.TOKEN_CLASSIFICATION, [text])  # no slot was kept
            assert result["entities"]
            for _ in range(available_cores()):  # every slot is free again
                await asyncio.wait_for(slots.acquire(), 1)
                held += 1
        finally:
            for _ in range(held):
                slots.release()
            await plane.stop()

    run(scenario())

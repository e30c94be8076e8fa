"""Routes and confidence cascades: the routes file's checks, threshold splitting (Hypothesis), and
cascades served over real HTTP on fake models (which model answered, default routes, errors,
deadlines across steps, metrics, the CLI's one-line startup error)."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from presso.core.manifest import Task
from presso.service.routing import ModelInfo, RoutesError, check_routes, load_routes
from presso.service.routing.cascade import split_by_threshold
from tests.conftest import LiveServer, make_settings
from tests.fakes import CLASS_LABELS, NER_LABELS, write_artifact

CASCADES = {"routes": {
    "sent": {"kind": "cascade", "task": "classify", "default": True,
             "steps": [{"model": "small-sent", "threshold": 0.9}, {"model": "large-sent"}]},
    "sent-all-small": {"kind": "cascade", "task": "classify",
                       "steps": [{"model": "small-sent", "threshold": 0.0}, {"model": "large-sent"}]},
    "ner": {"kind": "cascade", "task": "ner",
            "steps": [{"model": "small-ner", "threshold": 0.99}, {"model": "large-ner"}]},
}}
MODELS = {"small-sent": Task.SEQUENCE_CLASSIFICATION, "large-sent": Task.SEQUENCE_CLASSIFICATION,
          "small-ner": Task.TOKEN_CLASSIFICATION, "large-ner": Task.TOKEN_CLASSIFICATION}
INFOS = {name: ModelInfo(task, NER_LABELS if task == Task.TOKEN_CLASSIFICATION else CLASS_LABELS)
         for name, task in MODELS.items()}


@pytest.fixture(scope="module")
def cascade_models(tmp_path_factory):
    pytest.importorskip("onnx")
    root = tmp_path_factory.mktemp("cascade-models")
    for name, task in MODELS.items():
        write_artifact(root, name, "ner" if task == Task.TOKEN_CLASSIFICATION else "classify")
    return root


def write(tmp_path, data, name="routes.yaml") -> object:
    import yaml

    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return path


def test_routes_file_in_yaml_and_json_is_read_and_checked(tmp_path):
    for name in ("routes.yaml", "routes.json"):
        routes = load_routes(write(tmp_path, CASCADES, name))
        assert routes.default_for(Task.SEQUENCE_CLASSIFICATION) == "sent"
        assert routes.default_for(Task.TOKEN_CLASSIFICATION) is None
        check_routes(routes, INFOS)


@pytest.mark.parametrize("change, message", [
    (lambda r: r["sent"].update(colour="red"), "routes.sent.colour: Extra inputs are not permitted"),
    (lambda r: r["sent"]["steps"][0].pop("threshold"), "steps.0 (small-sent) needs a threshold"),
    (lambda r: r["sent"]["steps"][1].update(threshold=0.5), "the last step answers every text"),
    (lambda r: r["sent"]["steps"][0].update(threshold=1.5), "routes.sent.steps.0.threshold: Input should be less"),
    (lambda r: r["sent"].update(steps=r["sent"]["steps"][:1]), "routes.sent.steps: List should have at least 2"),
    (lambda r: r["sent"].update(kind="ensemble"), "routes.sent: Input tag 'ensemble' found using 'kind' does not"),
    (lambda r: r["sent-all-small"].update(default=True), "several default routes for classify"),
    (lambda r: r["ner"]["steps"][1].update(model="small-ner"), "a model appears twice"),
])
def test_an_invalid_routes_file_is_one_line_naming_the_field(tmp_path, change, message):
    data = json.loads(json.dumps(CASCADES))
    change(data["routes"])
    with pytest.raises(RoutesError) as info:
        load_routes(write(tmp_path, data))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_routes_naming_a_missing_model_or_one_of_another_task_are_refused(tmp_path):
    routes = load_routes(write(tmp_path, CASCADES))
    with pytest.raises(RoutesError, match=r"routes.sent.steps.1.model: no model named 'large-sent'"):
        check_routes(routes, {k: v for k, v in INFOS.items() if k != "large-sent"})
    with pytest.raises(RoutesError, match=r"routes.ner.steps.0.model: 'small-ner' is sequence-classification"):
        check_routes(routes, {**INFOS, "small-ner": ModelInfo(Task.SEQUENCE_CLASSIFICATION, CLASS_LABELS)})
    (tmp_path / "bad.yaml").write_text("routes: [unclosed")
    with pytest.raises(RoutesError, match="not valid YAML"):
        load_routes(tmp_path / "bad.yaml")
    with pytest.raises(RoutesError, match="No such file"):
        load_routes(tmp_path / "missing.yaml")


@given(st.lists(st.floats(0, 1), max_size=30), st.floats(0, 1), st.floats(0, 1))
def test_threshold_split_partitions_in_order_and_is_monotone(confidences, t1, t2):
    answered, escalated = split_by_threshold(confidences, t1)
    assert sorted(answered + escalated) == list(range(len(confidences)))
    assert answered == sorted(answered) and escalated == sorted(escalated)
    assert all(confidences[i] >= t1 for i in answered) and all(confidences[i] < t1 for i in escalated)
    low, high = sorted((t1, t2))
    assert set(split_by_threshold(confidences, high)[0]) <= set(split_by_threshold(confidences, low)[0])
    assert split_by_threshold(confidences, None) == (list(range(len(confidences))), [])


@pytest.fixture(scope="module")
def cascade_server(cascade_models, tmp_path_factory):
    from presso.service.api import create_app

    routes = write(tmp_path_factory.mktemp("routes"), CASCADES)
    with LiveServer(create_app(make_settings(cascade_models, routes_file=routes))) as server:
        yield server


def test_a_cascade_answers_each_text_with_the_first_confident_model(cascade_server):
    texts = ["good day", "the day is", "awful", "a"]
    with httpx.Client(base_url=cascade_server.url, timeout=30) as client:
        body = client.post("/classify", json={"texts": texts, "route": "sent"}).json()
        assert body["route"] == "sent"
        assert [r["model"] for r in body["results"]] == ["small-sent", "large-sent", "small-sent", "large-sent"]
        assert all((r["confidence"] >= 0.9) == (r["model"] == "small-sent") for r in body["results"])
        # the same fields as the model's own answer, whichever model answered
        alone = client.post("/classify", json={"texts": texts, "model": "large-sent"}).json()["results"]
        assert [r["label"] for r in body["results"]] == [r["label"] for r in alone]
        one = client.post("/classify", json={"text": "the day is", "route": "sent"}).json()
        assert one["route"] == "sent" and one["model"] == "large-sent" and "scores" in one
        assert [r["model"] for r in client.post("/classify", json={"texts": texts, "route": "sent-all-small"})
                .json()["results"]] == ["small-sent"] * 4
        ner = client.post("/ner", json={"texts": ["john smith lives in paris", "new york"], "route": "ner"}).json()
        assert [r["model"] for r in ner["results"]] == ["large-ner", "large-ner"]  # 0.97 < 0.99 on every word
        assert ner["results"][0]["entities"][0]["label"] == "PER"


def test_default_route_and_model_choice(cascade_server):
    with httpx.Client(base_url=cascade_server.url, timeout=30) as client:
        default = client.post("/classify", json={"text": "good day"}).json()
        assert default["route"] == "sent" and default["model"] == "small-sent"
        picked = client.post("/classify", json={"text": "good day", "model": "large-sent"}).json()
        assert picked["model"] == "large-sent" and "route" not in picked
        # NER has no default route and two models: the caller must choose
        assert client.post("/ner", json={"text": "john"}).status_code == 422


@pytest.mark.parametrize("body, status, error, field", [
    ({"text": "good", "route": "nope"}, 404, "unknown_route", "body.route"),
    ({"text": "good", "route": "ner"}, 422, "wrong_task", "body.route"),
    ({"text": "good", "route": "sent", "model": "small-sent"}, 422, "route_and_model", "body.route"),
    ({"text": "good", "route": 3}, 422, "invalid_request", "body.route"),
    ({"texts": ["good", "x" * 30_000], "route": "sent"}, 413, "text_too_long", "body.texts.1"),
])
def test_route_errors_are_json_naming_the_field(cascade_server, body, status, error, field):
    response = httpx.post(f"{cascade_server.url}/classify", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error and response.json()["field"] == field


def test_the_deadline_counts_across_steps(cascade_models, tmp_path, monkeypatch):
    """A text escalated after the deadline passed during the first step is answered 504, not late."""
    from fastapi.testclient import TestClient

    from presso.service import dataplane
    from presso.service.api import create_app

    import asyncio

    app = create_app(make_settings(cascade_models, routes_file=write(tmp_path, CASCADES)))
    real_infer = dataplane.DataPlane.infer

    async def slow_step(self, task, texts, **kwargs):
        out = await real_infer(self, task, texts, **kwargs)
        await asyncio.sleep(1.0)  # every step takes longer than the whole 500 ms deadline
        return out

    monkeypatch.setattr(dataplane.DataPlane, "infer", slow_step)
    with TestClient(app) as client:
        ok = client.post("/classify", json={"text": "good day", "route": "sent", "timeout_ms": 500})
        assert ok.status_code == 200  # answered by the first step: nothing is left to run late
        late = client.post("/classify", json={"text": "the day is", "route": "sent", "timeout_ms": 500})
        assert late.status_code == 504 and late.json()["field"] == "body.timeout_ms"


def test_metrics_count_answered_and_escalated_texts_per_step(cascade_server):
    def value(model: str, outcome: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(httpx.get(f"{cascade_server.url}/metrics").text):
            for s in family.samples:
                if s.name == "presso_route_texts_total" and s.labels == {"route": "sent", "model": model,
                                                                          "outcome": outcome}:
                    return s.value
        raise AssertionError("series missing")

    before = {k: value(*k) for k in (("small-sent", "answered"), ("small-sent", "escalated"),
                                     ("large-sent", "answered"))}
    httpx.post(f"{cascade_server.url}/classify", json={"texts": ["good", "the", "day"], "route": "sent"}, timeout=30)
    assert value("small-sent", "answered") - before[("small-sent", "answered")] == 1
    assert value("small-sent", "escalated") - before[("small-sent", "escalated")] == 2
    assert value("large-sent", "answered") - before[("large-sent", "answered")] == 2


def test_openapi_documents_route(cascade_server):
    schema = httpx.get(f"{cascade_server.url}/openapi.json").json()
    assert "route" in schema["components"]["schemas"]["InferenceRequest"]["properties"]
    assert "ClassifyRoutedBatchResponse" in schema["components"]["schemas"]


def test_serve_refuses_an_invalid_routes_file_in_one_line(cascade_models, tmp_path):
    from typer.testing import CliRunner

    from presso.cli import app

    data = json.loads(json.dumps(CASCADES))
    data["routes"]["sent"]["steps"][1]["model"] = "huge-sent"
    env = {"PRESSO_ROUTES_FILE": str(write(tmp_path, data)), "PRESSO_MODELS_DIR": str(cascade_models),
           "PRESSO_WARMUP": "false"}
    result = CliRunner().invoke(app, ["serve"], env=env)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: routes file {env['PRESSO_ROUTES_FILE']}: routes.sent.steps.1.model: no model named 'huge-sent'; "
        f"loaded: {sorted(MODELS)}"]

"""Domain experts behind a top-k router: top-k weighting and label maps (Hypothesis and exact cases),
the routes file's checks, and router routes over real HTTP on fake models."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from presso.core.ensemble import LabelMapError, combine_scores, combine_words, iob_labels, mapping_matrix
from presso.core.manifest import Task
from presso.core.spans import decode_words, merge_windows, merged_probs, window_words
from presso.service.routing import ModelInfo, RoutesError, check_routes, load_routes
from presso.service.routing.experts import top_experts
from tests.conftest import LiveServer, make_settings
from tests.fakes import CLASS_LABELS, NER_LABELS, VOCAB, token_logits_table, write_artifact

RENAMED = ["O", "B-place", "I-place", "B-person", "I-person"]  # NER_LABELS under other names
TO_ROUTE = {"place": "LOC", "person": "PER"}
ROUTES = {"routes": {
    "domains": {"kind": "router", "task": "ner", "router": "domain", "k": 1, "labels": ["LOC", "PER"],
                "experts": {"negative": {"model": "ner-a"}, "neutral": {"model": "ner-a"},
                            "positive": {"model": "ner-b", "label_map": TO_ROUTE}}},
    "domains-k2": {"kind": "router", "task": "ner", "router": "domain", "k": 2, "labels": ["LOC", "PER"],
                   "experts": {"negative": {"model": "ner-a"}, "neutral": {"model": "ner-b", "label_map": TO_ROUTE},
                               "positive": {"model": "ner-b", "label_map": TO_ROUTE}}},
    "sentiment-experts": {"kind": "router", "task": "classify", "router": "domain", "k": 3,
                          "experts": {label: {"model": "domain"} for label in CLASS_LABELS}},
}}
INFOS = {"domain": ModelInfo(Task.SEQUENCE_CLASSIFICATION, CLASS_LABELS),
         "ner-a": ModelInfo(Task.TOKEN_CLASSIFICATION, NER_LABELS),
         "ner-b": ModelInfo(Task.TOKEN_CLASSIFICATION, RENAMED)}


@given(st.dictionaries(st.sampled_from(list("abcdef")), st.floats(0, 1), min_size=1), st.integers(1, 4),
       st.floats(0, 1))
def test_top_k_keeps_the_best_and_weights_sum_to_one(scores, k, floor):
    chosen = top_experts(scores, k, floor)
    assert 1 <= len(chosen) <= k
    assert scores[chosen[0][0]] == max(scores.values())
    assert sum(w for _, w in chosen) == pytest.approx(1.0)
    assert all(scores[label] >= floor for label, _ in chosen[1:])
    assert [w for _, w in chosen] == sorted((w for _, w in chosen), reverse=True)


def test_label_maps_sum_probabilities_and_refuse_gaps():
    m = mapping_matrix(["O", "B-person", "I-person", "B-band", "I-band"], iob_labels(["PER"]),
                       {"person": "PER", "band": "PER"}, iob=True)
    assert m.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(LabelMapError, match="'band' is not mapped"):
        mapping_matrix(["O", "B-band", "I-band"], iob_labels(["PER"]), {"person": "PER"}, iob=True)
    with pytest.raises(LabelMapError, match="not one of the route's labels"):
        mapping_matrix(["x"], ["y"], {"x": "z"}, iob=False)
    mixed = combine_scores([(0.75, {"a": 1.0, "b": 0.0}), (0.25, {"p": 0.0, "q": 1.0})],
                           [np.eye(2, dtype=np.float32)] * 2, [["a", "b"], ["p", "q"]], ["A", "B"])
    assert mixed["label"] == "A" and mixed["scores"] == {"A": 0.75, "B": 0.25}


def fake_windows(text_tokens: list[int], labels: list[str], seed: int):
    rng = np.random.default_rng(seed)
    n = len(text_tokens)
    logits = rng.normal(size=(n, len(labels))).astype(np.float32) * 3
    offsets = [(4 * i, 4 * i + 3) for i in range(n)]
    return [window_words(logits, list(range(n)), offsets, labels)]


@given(st.integers(1, 12), st.integers(0, 10_000))
def test_one_expert_with_weight_one_is_that_expert(n, seed):
    windows = fake_windows(list(range(n)), NER_LABELS, seed)
    spans, probs = merged_probs(windows, len(NER_LABELS))
    eye = np.eye(len(NER_LABELS), dtype=np.float32)
    out_spans, out = combine_words([(1.0, spans, probs)], [eye], len(NER_LABELS))
    assert out_spans == spans and np.allclose(out, probs)
    assert decode_words(out, out_spans, NER_LABELS) == merge_windows(windows, NER_LABELS)


@given(st.integers(1, 12), st.integers(0, 10_000), st.floats(0.05, 0.95))
def test_two_experts_mix_word_probabilities_by_weight(n, seed, w):
    a = merged_probs(fake_windows(list(range(n)), NER_LABELS, seed), 5)
    b = merged_probs(fake_windows(list(range(n)), NER_LABELS, seed + 1), 5)
    eye = np.eye(5, dtype=np.float32)
    spans, mixed = combine_words([(w, *a), (1 - w, *b)], [eye, eye], 5)
    assert spans == a[0]
    assert np.allclose(mixed, w * a[1] + (1 - w) * b[1])
    assert np.allclose(mixed.sum(axis=1), 1.0, atol=1e-5)


def test_router_routes_are_checked_against_the_models(tmp_path):
    path = tmp_path / "routes.json"
    path.write_text(json.dumps(ROUTES))
    check_routes(load_routes(path), INFOS)
    cases = [
        (lambda r: r["domains"]["experts"].pop("neutral"), "the router 'domain' can choose ['neutral']"),
        (lambda r: r["domains"]["experts"].update(sports={"model": "ner-a"}), "['sports'] are not labels"),
        (lambda r: r["domains"]["experts"]["positive"].pop("label_map"), "experts.positive.label_map: ner-b: entity "
                                                                         "type 'place' maps to 'place', not one"),
        (lambda r: r["domains"].update(router="ner-a"), "routes.domains.router: 'ner-a' is token-classification"),
        (lambda r: r["domains"]["experts"]["neutral"].update(model="nope"), "experts.neutral.model: no model"),
    ]
    for change, message in cases:
        data = json.loads(json.dumps(ROUTES))
        change(data["routes"])
        path.write_text(json.dumps(data))
        with pytest.raises(RoutesError) as info:
            check_routes(load_routes(path), INFOS, path)
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


@pytest.fixture(scope="module")
def router_server(tmp_path_factory):
    pytest.importorskip("onnx")
    root = tmp_path_factory.mktemp("router-models")
    write_artifact(root, "domain", "classify")
    write_artifact(root, "ner-a", "ner")
    write_artifact(root, "ner-b", "ner", labels=RENAMED)
    routes = tmp_path_factory.mktemp("routes") / "routes.yaml"
    routes.write_text(json.dumps(ROUTES))
    from presso.service.api import create_app

    with LiveServer(create_app(make_settings(root, routes_file=routes))) as server:
        yield server


def test_k1_answers_with_the_routed_expert_and_k2_mixes_them(router_server):
    texts = ["john smith is good", "paris is awful", "the day"]  # router: positive, negative, neutral
    with httpx.Client(base_url=router_server.url, timeout=30) as client:
        alone = client.post("/ner", json={"texts": texts, "model": "ner-a"}).json()["results"]
        k1 = client.post("/ner", json={"texts": texts, "route": "domains"}).json()
        assert k1["route"] == "domains"
        assert [r["model"] for r in k1["results"]] == ["ner-b", "ner-a", "ner-a"]
        assert [[e["expert"] for e in r["experts"]] for r in k1["results"]] == [["positive"], ["negative"], ["neutral"]]
        # ner-b's labels are mapped back onto the route's: the same entities as ner-a's
        for routed, own in zip(k1["results"], alone):
            assert [(e["start"], e["end"], e["label"]) for e in routed["entities"]] == \
                   [(e["start"], e["end"], e["label"]) for e in own["entities"]]
        k2 = client.post("/ner", json={"texts": texts, "route": "domains-k2"}).json()["results"]
        assert all(len(r["experts"]) == 2 and sum(e["weight"] for e in r["experts"]) == pytest.approx(1.0)
                   for r in k2)
        assert [e["label"] for e in k2[0]["entities"]] == ["PER"]
        one = client.post("/classify", json={"text": "good day", "route": "sentiment-experts"}).json()
        direct = client.post("/classify", json={"text": "good day", "model": "domain"}).json()
        assert one["label"] == direct["label"] and one["scores"] == pytest.approx(direct["scores"], abs=1e-5)
        assert one["experts"][0]["expert"] == "positive"


def test_one_ner_expert_answers_its_own_spans_not_its_summed_mapped_probabilities(tmp_path):
    """An expert whose word is "no entity" (O 0.30) but split between two types that the route maps
    together (0.24 + 0.24): adding up the mapped probabilities and decoding again would find an
    entity the expert does not; a text routed to that one expert gets the expert's own answer."""
    pytest.importorskip("onnx")
    labels = ["O", "B-product", "I-product", "B-movie", "I-movie"]
    table = token_logits_table("ner")
    table[VOCAB.index("u")] = [1.0, 0.8, 0.0, 0.8, 0.0]
    root = tmp_path / "models"
    write_artifact(root, "domain", "classify")
    write_artifact(root, "ner-misc", "ner", labels=labels, table=table)
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps({"routes": {"misc": {
        "kind": "router", "task": "ner", "router": "domain", "k": 1, "labels": ["MISC"],
        "experts": {label: {"model": "ner-misc", "label_map": {"product": "MISC", "movie": "MISC"}}
                    for label in CLASS_LABELS}}}}))
    words = window_words(table[[VOCAB.index("the"), VOCAB.index("u")]], [0, 1], [(0, 3), (4, 5)], labels)
    spans, probs = merged_probs([words], len(labels))
    summed = probs @ mapping_matrix(labels, iob_labels(["MISC"]), {"product": "MISC", "movie": "MISC"}, iob=True)
    assert [w.tag for w in decode_words(summed, spans, iob_labels(["MISC"]))] == ["O", "B-MISC"]  # the other way
    from presso.service.api import create_app

    with LiveServer(create_app(make_settings(root, routes_file=routes))) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            own = client.post("/ner", json={"text": "the u", "model": "ner-misc"}).json()
            routed = client.post("/ner", json={"text": "the u", "route": "misc"}).json()
    assert own["entities"] == [] and routed["entities"] == [] and routed["model"] == "ner-misc"


def test_router_metrics_count_scored_and_routed_texts(router_server):
    with httpx.Client(base_url=router_server.url, timeout=30) as client:
        client.post("/ner", json={"texts": ["paris", "john"], "route": "domains-k2"})
        text = client.get("/metrics").text
    assert 'presso_route_texts_total{model="domain",outcome="scored",route="domains-k2"}' in text
    assert 'presso_route_texts_total{model="ner-a",outcome="routed",route="domains-k2"}' in text


def test_a_router_route_on_the_wrong_endpoint_is_a_422(router_server):
    resp = httpx.post(f"{router_server.url}/classify", json={"text": "paris", "route": "domains"}, timeout=30)
    assert resp.status_code == 422 and resp.json()["field"] == "body.route"


def test_reloading_an_expert_keeps_its_routes_serving(router_server):
    with httpx.Client(base_url=router_server.url, timeout=60) as client:
        assert client.post("/models/ner-b/reload").status_code == 200
        body = client.post("/ner", json={"text": "john smith is good", "route": "domains"}).json()
        assert body["model"] == "ner-b" and [e["label"] for e in body["entities"]] == ["PER"]


def test_api_keys_guard_routes_like_any_model_endpoint(tmp_path):
    pytest.importorskip("onnx")
    from presso.service.api import create_app

    root = tmp_path / "models"
    write_artifact(root, "domain", "classify")
    write_artifact(root, "ner-a", "ner")
    write_artifact(root, "ner-b", "ner", labels=RENAMED)
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps(ROUTES))
    with LiveServer(create_app(make_settings(root, routes_file=routes, api_keys="s3cret"))) as server:
        body = {"text": "paris", "route": "domains"}
        assert httpx.post(f"{server.url}/ner", json=body, timeout=30).status_code == 401
        ok = httpx.post(f"{server.url}/ner", json=body, headers={"Authorization": "Bearer s3cret"}, timeout=30)
        assert ok.status_code == 200 and ok.json()["model"] == "ner-a"

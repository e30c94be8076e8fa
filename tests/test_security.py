"""API keys, a separate metrics port, request ids and logs that never hold request texts."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from tests.conftest import LiveServer, free_port, make_settings


@pytest.fixture(scope="module")
def keyed(fake_models_dir, tmp_path_factory):
    from presso.service.api import create_app

    keys_file = tmp_path_factory.mktemp("secrets") / "keys"
    keys_file.write_text("# rotated monthly\nfile-key-1\n\n  file-key-2  # second\n")
    port = free_port()
    app = create_app(make_settings(fake_models_dir, api_keys="env-key-1,env-key-2", api_keys_file=keys_file,
                                   metrics_port=port))
    with LiveServer(app) as server:
        yield server, port


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer env-key-2"}, {"authorization": "bearer file-key-1"}, {"X-API-Key": "file-key-2"},
])
def test_a_configured_key_opens_the_api(keyed, headers):
    server, _ = keyed
    assert httpx.post(server.url + "/ner", json={"text": "John"}, headers=headers).status_code == 200
    assert httpx.get(server.url + "/models", headers=headers).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "env-key-1x"},
                                     {"Authorization": "Basic env-key-1"}, {"X-API-Key": ""}])
@pytest.mark.parametrize("method, path", [("POST", "/ner"), ("POST", "/classify"), ("GET", "/models"),
                                          ("POST", "/models/fake-ner/reload")])
def test_without_a_valid_key_the_answer_is_401_without_detail(keyed, headers, method, path, caplog):
    server, _ = keyed
    with caplog.at_level(logging.DEBUG):
        r = httpx.request(method, server.url + path, json={"text": "John"}, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"error": "unauthorized", "message": "missing or invalid API key", "field": None}
    assert not any(k in caplog.text for k in ("env-key", "file-key", "wrong"))


def test_probes_stay_open_and_metrics_move_to_their_own_port(keyed):
    server, port = keyed
    assert httpx.get(server.url + "/health/live").status_code == 200
    assert httpx.get(server.url + "/health/ready").status_code == 200
    assert httpx.get(server.url + "/metrics").status_code == 404
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert metrics.status_code == 200 and "presso_requests_total" in metrics.text


def test_keys_are_secret_in_the_settings(fake_models_dir):
    settings = make_settings(fake_models_dir, api_keys="top-secret")
    assert "top-secret" not in repr(settings) and "top-secret" not in str(settings.model_dump())
    assert settings.api_key_list() == [b"top-secret"]


def test_request_id_is_echoed_or_generated(live_server):
    r = httpx.post(live_server.url + "/ner", json={"text": "John"}, headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = httpx.post(live_server.url + "/ner", json={"text": "John"}).headers["x-request-id"]
    assert len(generated) == 32 and generated != "abc-123"


def test_json_logs_carry_the_request_id_and_extra_fields(capsys):
    from presso.service.logs import configure_logging, request_id

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json")
        token = request_id.set("rid-1")
        logging.getLogger("presso.access").info("POST /ner 200", extra={"status": 200, "duration_ms": 1.5})
        request_id.reset(token)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["request_id"] == "rid-1" and line["status"] == 200 and line["level"] == "INFO"
    assert line["logger"] == "presso.access" and line["message"] == "POST /ner 200" and "time" in line


def test_rotated_keys_file_takes_effect_without_restart(fake_models_dir, tmp_path):
    import os

    from presso.service.api import create_app

    keys = tmp_path / "keys"
    keys.write_text("old-key\n")
    with LiveServer(create_app(make_settings(fake_models_dir, api_keys_file=keys))) as server:
        def status(key: str) -> int:
            return httpx.post(server.url + "/ner", json={"text": "a"}, headers={"X-API-Key": key}).status_code

        assert (status("old-key"), status("new-key")) == (200, 401)
        keys.write_text("new-key\n")
        os.utime(keys, ns=(1, 1))  # a different modification time, however fast the test runs
        assert (status("old-key"), status("new-key")) == (401, 200)
        keys.write_text("# every key revoked\n")
        os.utime(keys, ns=(2, 2))
        assert (status("old-key"), status("new-key"), status("")) == (401, 401, 401)  # empty: closed, not open


def test_unreadable_keys_file_is_a_settings_error(tmp_path):
    from pydantic import ValidationError

    from presso.service.settings import Settings

    with pytest.raises(ValidationError, match="api_keys_file"):
        Settings(api_keys_file=tmp_path / "missing")

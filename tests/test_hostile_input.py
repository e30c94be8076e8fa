"""Hostile and odd input through real HTTP on 127.0.0.1: every answer a JSON 4xx naming the
problem or a valid result, never a 500 or a hang."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.conftest import LiveServer, make_settings


@pytest.fixture(scope="module")
def small_limits(fake_models_dir):
    from presso.service.api import create_app

    app = create_app(make_settings(fake_models_dir, max_body_bytes=2048, body_read_timeout_s=1.0,
                                   max_header_bytes=4096, header_read_timeout_s=1.0))
    with LiveServer(app) as server:
        yield server


def raw_request(server, head: bytes, chunks: list[bytes] = (), pause_s: float = 0.0) -> tuple[int, dict]:
    """Send ``head`` and ``chunks`` over a socket; return the status and JSON body."""
    import time

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head)
        for chunk in chunks:
            try:
                s.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered early and closed: read what it said
            time.sleep(pause_s)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            part = s.recv(65536)
            if not part:
                break
            data += part
    head_part, body = data.split(b"\r\n\r\n", 1)
    return int(head_part.split()[1]), json.loads(body)


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def test_declared_body_over_the_limit_is_refused_before_it_is_read(small_limits):
    head = (b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n")
    status, body = raw_request(small_limits, head)  # not one body byte sent
    assert status == 413 and body["error"] == "body_too_large" and body["field"] == "body"


def test_chunked_body_over_the_limit_is_refused_while_streaming(small_limits):
    head = b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunk = b"x" * 1000
    frames = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 50 + [b"0\r\n\r\n"]
    status, body = raw_request(small_limits, head, frames, pause_s=0.01)
    assert status == 413 and body["error"] == "body_too_large"


def test_chunked_body_under_the_limit_is_served(small_limits):
    payload = json.dumps({"text": "John lives in Paris"}).encode()
    head = b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    frames = [b"%x\r\n%s\r\n" % (len(payload[i:i + 5]), payload[i:i + 5]) for i in range(0, len(payload), 5)]
    status, body = raw_request(small_limits, head, frames + [b"0\r\n\r\n"])
    assert status == 200 and body["entities"]


def test_stalled_upload_gets_408_and_frees_the_connection(small_limits):
    head = (b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"text": "half')
    status, body = raw_request(small_limits, head)  # the other 86 bytes never come
    assert status == 408 and body["error"] == "body_timeout"


def test_oversized_headers_get_431_even_unfinished(small_limits):
    head = b"POST /ner HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20000  # never finished
    status, body = raw_request(small_limits, head)
    assert status == 431 and body["error"] == "headers_too_large"


@pytest.mark.parametrize("size", [4097, 20000, 100000])
def test_oversized_headers_get_431_when_they_arrive_whole(small_limits, size):
    """Complete headers over the limit in one read are refused too (not only unfinished ones)."""
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * size + b"\r\n\r\n"
    status, body = raw_request(small_limits, head)
    assert status == 431 and body["error"] == "headers_too_large"


def test_headers_just_under_the_limit_with_a_body_in_the_same_read_are_served(small_limits):
    body = json.dumps({"text": "Paris"}).encode()
    start = b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + \
        str(len(body)).encode() + b"\r\nX-A: "
    pad = 4096 - len(start) - 4  # the header block, blank line included, is exactly the limit
    status, answer = raw_request(small_limits, start + b"a" * pad + b"\r\n\r\n" + body)
    assert status == 200 and "entities" in answer


def test_slow_headers_get_408_and_idle_connections_are_closed(small_limits):
    status, body = raw_request(small_limits, b"POST /ner HTTP/1.1\r\nHost: x\r\n")  # and then nothing
    assert status == 408 and body["error"] == "header_timeout"
    with socket.create_connection(("127.0.0.1", small_limits.port), timeout=10) as s:
        assert s.recv(100) == b""  # closed by the server after the header timeout, nothing sent


@pytest.mark.parametrize("head", [b"GARBAGE\r\n\r\n", b"GET /ner HTTP/9.9\r\n\r\n",
                                  b"POST /ner HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                                  b"POST /ner HTTP/1.1\r\nX-Request-ID: a\x01b\r\n\r\n"])
def test_malformed_http_gets_a_json_400(small_limits, head):
    status, body = raw_request(small_limits, head)
    assert status == 400 and body["error"] == "invalid_http"


def test_many_unknown_fields_give_one_error_naming_the_first(live_server):
    body = {f"k{i}": 1 for i in range(50_000)} | {"text": "a"}
    r = httpx.post(live_server.url + "/ner", json=body, timeout=30)
    assert r.status_code == 422 and r.json()["field"] == "body.k0"


@pytest.mark.parametrize("text", [
    "", "   ", "\t\n", "\x00\x01\x02 John \x7f", "John 😀 Smith 👨‍👩‍👧 in Paris 🇫🇷", "Zoë e\u0301 Müller",
    "مرحبا John في Paris", "שלום Paris", "東京 John 北京", "\u202eJohn\u202c Paris", "a\u200bb John",
    "John\r\nParis", "\ufeffJohn", "𝔍𝔬𝔥𝔫 Paris",
])
@pytest.mark.parametrize("path", ["/ner", "/classify"])
def test_odd_texts_get_valid_answers_with_exact_offsets(live_server, path, text):
    r = httpx.post(live_server.url + path, json={"text": text}, timeout=30)
    assert r.status_code == 200, r.text
    for entity in r.json().get("entities", []):
        assert text[entity["start"]:entity["end"]] == entity["text"]


@pytest.mark.parametrize("body, status, error", [
    (b'[1, 2]', 422, "invalid_request"),
    (b'"text"', 422, "invalid_request"),
    (b'{"text": null}', 422, "invalid_request"),
    (b'{"texts": null}', 422, "invalid_request"),
    (b'{"texts": [["a"]]}', 422, "invalid_request"),
    (b'{"text": "a", "timeout_ms": "5"}', 422, "invalid_request"),
    (b'{"text": "a", "timeout_ms": 0}', 422, "invalid_request"),
    (b'{"text": "\\ud800"}', 422, "invalid_text"),
    (b'', 422, "invalid_request"),  # no body: the required body is missing
    (b'{"text": "a"', 400, "invalid_json"),
    (b'{"text": "\xc3\x28"}', 400, "invalid_json"),
])
def test_malformed_bodies_get_a_json_4xx(live_server, body, status, error):
    r = httpx.post(live_server.url + "/classify", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["error"] == error and r.json()["message"]


def test_bodies_held_at_once_are_bounded(small_limits):
    """Four uploads of 2,000 bytes each stall before their last byte: with the fifth, the bytes
    past each body's 256-byte allowance (2,048 / 8) would pass 4 x 2,048 and it is refused at once
    with 429; a small request is still served meanwhile (stalled uploads cannot lock everyone out)."""
    import time

    head = (b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n")
    held = [socket.create_connection(("127.0.0.1", small_limits.port), timeout=10) for _ in range(4)]
    try:
        for s in held:
            s.sendall(head + b" " * 1999)  # one byte short
        time.sleep(0.3)
        status, body = raw_request(small_limits, head, [b" " * 2000])
        assert status == 429 and body["error"] == "overloaded"
        small = json.dumps({"text": "Paris"}).encode()
        status, body = raw_request(small_limits, b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                   b"Content-Length: " + str(len(small)).encode() + b"\r\n\r\n" + small)
        assert status == 200 and "entities" in body
    finally:
        for s in held:
            s.close()
    time.sleep(1.2)  # the stalled ones time out (408) and release their bytes
    status, _ = raw_request(small_limits, head.replace(b"2000", b"19"), [b'{"text": "John ok"}'])
    assert status == 200

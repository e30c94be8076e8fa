"""An early answer reaches clients that send their whole body before reading (lingering close).

Without it the server closed with unread bytes in its receive buffer, the kernel sent a reset,
and Python's urllib / requests saw "Connection reset by peer" instead of the 413 JSON body.
Real HTTP on 127.0.0.1, the service's own protocol class, default body limit (8 MiB).
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import httpx
import pytest
import requests

from tests.conftest import LiveServer, make_settings

MB = 1024 * 1024
SIZES_MB = [9, 20, 100]


@pytest.fixture(scope="module")
def server(fake_models_dir):
    from presso.service.api import create_app

    app = create_app(make_settings(fake_models_dir, body_read_timeout_s=1.0, max_header_bytes=4096,
                                   header_read_timeout_s=1.0))
    with LiveServer(app) as live:
        yield live


def big_body(size_mb: int) -> bytes:
    text = "a" * (size_mb * MB)
    return json.dumps({"text": text}).encode()


def urllib_post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def requests_post(url: str, body: bytes) -> tuple[int, dict]:
    response = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    return response.status_code, response.json()


def httpx_post(url: str, body: bytes) -> tuple[int, dict]:
    response = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=30)
    return response.status_code, response.json()


@pytest.mark.parametrize("size_mb", SIZES_MB)
@pytest.mark.parametrize("client", [urllib_post, requests_post, httpx_post], ids=["urllib", "requests", "httpx"])
def test_oversized_body_gets_the_413_json_not_a_reset(server, client, size_mb):
    status, body = client(server.url + "/ner", big_body(size_mb))
    assert status == 413 and body["error"] == "body_too_large" and body["field"] == "body"


def read_answer(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while True:
        part = sock.recv(65536)
        if not part:
            break
        data += part
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(rest) >= length:
                break
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(rest)


def keep_sending(sock: socket.socket, chunk: bytes, seconds: float, pause_s: float = 0.0) -> int:
    """Send ``chunk`` repeatedly for ``seconds``; the bytes the server accepted."""
    sent, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.sendall(chunk)
        except OSError:
            break
        sent += len(chunk)
        if pause_s:
            time.sleep(pause_s)
    return sent


def test_raw_client_that_keeps_sending_past_the_413_reads_it(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 60000000\r\n\r\n")
        sent = keep_sending(s, b"x" * 65536, seconds=1.0)
        assert sent > 8 * MB  # the server kept reading (and discarding) after its answer
        status, body = read_answer(s)
    assert status == 413 and body["error"] == "body_too_large"


def test_raw_client_trickling_past_the_body_timeout_reads_the_408(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000\r\n\r\n")
        keep_sending(s, b"x" * 100, seconds=1.8, pause_s=0.05)  # the timeout is 1 s
        status, body = read_answer(s)
    assert status == 408 and body["error"] == "body_timeout"


def test_raw_client_sending_headers_past_the_limit_reads_the_431(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /ner HTTP/1.1\r\nHost: x\r\nX-A: ")
        keep_sending(s, b"a" * 65536, seconds=0.5)
        status, body = read_answer(s)
    assert status == 431 and body["error"] == "headers_too_large"


def open_connections(server) -> int:
    return len(server.server.server_state.connections)


def wait_for_connections(server, count: int, within_s: float) -> float:
    started = time.monotonic()
    while open_connections(server) > count:
        assert time.monotonic() - started < within_s, "the server kept the connection open"
        time.sleep(0.02)
    return time.monotonic() - started


def test_lingering_ends_when_the_client_stops_sending(server):
    before = open_connections(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Length: 60000000\r\n\r\n" + b"x" * MB)
        status, _ = read_answer(s)
        assert s.recv(10) == b""  # the answer ends with the server's FIN
        s.shutdown(socket.SHUT_WR)
        wait_for_connections(server, before, within_s=2.0)  # and it closes on the client's
    assert status == 413


def test_lingering_is_bounded_for_a_client_that_neither_sends_nor_closes(server, monkeypatch):
    from presso.service import protocol

    monkeypatch.setattr(protocol, "LINGER_TIMEOUT_S", 0.5)
    before = open_connections(server)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /ner HTTP/1.1\r\nHost: x\r\nContent-Length: 60000000\r\n\r\n" + b"x" * MB)
        status, _ = read_answer(s)
        waited = wait_for_connections(server, before, within_s=3.0)
    assert status == 413 and waited < 3.0


def test_the_service_still_answers_after_lingering(server):
    for _ in range(3):
        urllib_post(server.url + "/ner", big_body(9))
    status, body = httpx_post(server.url + "/ner", json.dumps({"text": "John lives in Paris"}).encode())
    assert status == 200 and "entities" in body

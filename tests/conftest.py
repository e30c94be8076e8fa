from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from presso.bench.net import free_port  # noqa: F401  (re-exported for tests)
from tests.fakes import write_artifact


@pytest.fixture(scope="session")
def fake_models_dir(tmp_path_factory) -> Path:
    pytest.importorskip("onnx")
    root = tmp_path_factory.mktemp("models")
    write_artifact(root, "fake-ner", "ner")
    write_artifact(root, "fake-sentiment", "classify")
    return root


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a background thread (real HTTP)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        from presso.service.protocol import protocol_class

        settings = app.state.presso.settings  # the service's own HTTP protocol and limits, as in production
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    http=protocol_class(settings.max_header_bytes,
                                                                        settings.header_read_timeout_s)))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def make_settings(models_dir: Path, **overrides):
    from presso.service.settings import Settings

    return Settings(models_dir=models_dir, **overrides)


@pytest.fixture(scope="session")
def live_server(fake_models_dir):
    from presso.service.api import create_app

    with LiveServer(create_app(make_settings(fake_models_dir, max_wait_ms=2.0))) as server:
        yield server

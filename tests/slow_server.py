"""``python -m tests.slow_server``: the real server entry point (settings from PRESSO_*), with every
inference batch slowed by ``SLOW_INFER_S`` so a test can signal it while requests are in flight."""

from __future__ import annotations

import os
import time

from presso.service.registry import LoadedModel
from presso.service.server import run
from presso.service.settings import Settings

_infer = LoadedModel.infer


def slow_infer(self, items, alone=False):
    time.sleep(float(os.environ.get("SLOW_INFER_S", "0.05")))  # a worker thread, not the event loop
    return _infer(self, items, alone)


if __name__ == "__main__":
    LoadedModel.infer = slow_infer
    run(Settings())

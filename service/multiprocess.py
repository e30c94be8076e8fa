"""Several API processes (``PRESSO_WORKERS`` > 1): gunicorn's arbiter with uvicorn workers.

Each worker loads the models and runs its own batchers (memory grows with the worker count; on a
CPU one process already uses every core, so this is for isolation and for hosts where one event
loop is the bottleneck). The arbiter replaces a worker that dies or hangs.

Metrics stay exact across processes with prometheus-client's multiprocess mode: every process
writes its values to files in ``PROMETHEUS_MULTIPROC_DIR`` (a fresh directory, emptied at start);
``/metrics`` in any worker aggregates them (counters and histograms summed over live and dead
workers, so totals never go backwards; gauges over live workers only, see
:mod:`presso.service.metrics`). When a worker exits the arbiter's ``child_exit`` hook marks it dead.

Shutdown: SIGTERM to the arbiter reaches every worker, which drains as a single process does
(:class:`presso.service.draining.DrainingServer`); the arbiter waits ``shutdown_grace_s`` + 5 s for them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger
from uvicorn_worker import UvicornWorker

from presso.service.settings import Settings

log = logging.getLogger(__name__)
ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir() -> tuple[Path, bool]:
    """A fresh, empty ``PROMETHEUS_MULTIPROC_DIR`` (set in the environment before workers fork, so
    prometheus-client in every worker writes its values there), and whether it was made here (then
    it is removed at exit)."""
    made = not os.environ.get(ENV)
    path = Path(os.environ.get(ENV) or tempfile.mkdtemp(prefix="presso-metrics-"))
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ[ENV] = str(path)
    return path, made


class JsonGunicornLogger(Logger):
    """gunicorn's own messages go through the root logger (JSON lines, like the service's)."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers = []
            logger.propagate = True


class PressoWorker(UvicornWorker):
    """uvicorn worker that drains on SIGTERM like the single-process server."""

    CONFIG_KWARGS = {"loop": "auto", "http": "auto", "log_config": None, "access_log": False}

    async def _serve(self) -> None:
        import sys

        from gunicorn.arbiter import Arbiter

        from presso.service.draining import DrainingServer
        from presso.service.protocol import protocol_class

        settings = self.wsgi.state.presso.settings
        self.config.app = self.wsgi
        self.config.timeout_graceful_shutdown = settings.shutdown_grace_s
        self.config.http = protocol_class(settings.max_header_bytes, settings.header_read_timeout_s)
        server = DrainingServer(self.config, self.wsgi.state.presso, self.config.timeout_graceful_shutdown)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


def _child_exit(_server, worker) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class PressoArbiter(BaseApplication):
    """gunicorn configured from :class:`Settings` (no gunicorn config file or CLI flags)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        for key, value in {"bind": f"{s.host}:{s.port}", "workers": s.workers,
                           "worker_class": f"{PressoWorker.__module__}.{PressoWorker.__name__}",
                           "graceful_timeout": int(s.shutdown_grace_s + 5), "timeout": 120, "keepalive": 5,
                           "child_exit": _child_exit, "loglevel": s.log_level.lower(),
                           # gunicorn 27's control socket: a thread in the arbiter (running while it
                           # forks replacement workers) and a socket under $HOME shared by every
                           # arbiter on the machine (read-only in the container); not used here.
                           "control_socket_disable": True,
                           "logger_class": f"{JsonGunicornLogger.__module__}.{JsonGunicornLogger.__name__}"}.items():
            self.cfg.set(key, value)

    def load(self):
        from presso.service.api import create_app
        from presso.service.logs import configure_logging

        configure_logging(self.settings.log_level, self.settings.log_format)  # in each worker, after fork
        return create_app(self.settings)


def run(settings: Settings) -> None:
    """Serve with ``settings.workers`` processes until SIGTERM.

    Raises:
        RuntimeError: prometheus_client was imported before the metrics directory was set.
    """
    import sys

    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set")
    path, made = prepare_metrics_dir()
    log.info("starting %d workers, metrics aggregated in %s", settings.workers, path)
    if settings.metrics_port:
        from prometheus_client import CollectorRegistry, multiprocess, start_http_server

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(settings.metrics_port, settings.host, registry)
    try:
        PressoArbiter(settings).run()
    finally:
        if made:
            shutil.rmtree(path, ignore_errors=True)

"""Process entry point: logging, then uvicorn serving :func:`presso.service.api.create_app`, with a
draining shutdown.

One process per container: ONNX Runtime parallelises inside each batch (intra-op threads) and
the batcher's worker threads overlap batches, so Prometheus' default single-process registry is
exact. Scale out with more replicas (see deploy/).

Shutdown on SIGTERM/SIGINT drains first (:class:`presso.service.draining.DrainingServer`).
"""

from __future__ import annotations

import logging
import os
import signal

import uvicorn

from presso.service.draining import DrainingServer
from presso.service.logs import configure_logging
from presso.service.protocol import protocol_class
from presso.service.settings import Settings, unknown_variables

log = logging.getLogger(__name__)
def _drained(signum, _frame) -> None:
    log.info("signal %d: in-flight requests drained, exiting", signum)


def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, drain, return (uvicorn re-raises the signal after shutdown; the
    handler installed here turns that into a normal return, so a drained shutdown exits 0).

    Raises:
        ArtifactError: a model cannot be served (bad files, fails to run, reference outputs differ;
            with several workers only the manifests and checksums are checked here, before forking).
        RoutesError: ``routes_file`` is invalid or names a model that is missing or of another task.
    """
    from presso.service.routing import ModelInfo, check_routes, load_routes

    routes = load_routes(settings.routes_file) if settings.routes_file else None
    configure_logging(settings.log_level, settings.log_format)
    for name in unknown_variables(dict(os.environ)):
        log.warning("%s is not a Presso setting and is ignored (see README, Configuration)", name)
    from presso.core.manifest import artifact_dirs, parse_manifest, read_artifact

    if routes is not None:  # against the manifests, before any graph is loaded or worker forked
        check_routes(routes, {m.name: ModelInfo(m.task, list(m.labels))
                              for m in map(parse_manifest, artifact_dirs(settings.models_dir))}, settings.routes_file)
    if settings.workers > 1:  # before anything imports prometheus_client (it picks its mode at import)
        from presso.service.multiprocess import run as run_workers

        for folder in artifact_dirs(settings.models_dir):  # manifests and checksums before forking workers
            read_artifact(folder)
        return run_workers(settings)
    from presso.service.api import create_app
    from presso.service.dataplane import model_options
    from presso.service.registry import load_models

    # Loaded before uvicorn starts (it would not accept connections before startup anyway), so a
    # model that cannot be served is an ArtifactError for the caller, not a traceback in a log line.
    app = create_app(settings, load_models(settings.models_dir, **model_options(settings)))
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                            timeout_graceful_shutdown=settings.shutdown_grace_s, access_log=False, log_config=None,
                            http=protocol_class(settings.max_header_bytes, settings.header_read_timeout_s))
    server = DrainingServer(config, app.state.presso, settings.shutdown_grace_s)
    signal.signal(signal.SIGTERM, _drained)  # restored by uvicorn, then called with the captured signal
    signal.signal(signal.SIGINT, _drained)
    server.run()

"""Prometheus metrics (base units: seconds, tokens). Created per app so tests can build many apps.

By default one process serves all requests: the event loop does HTTP and scheduling, ONNX Runtime
runs batches in worker threads (it releases the GIL, and parallelises inside a batch with intra-op
threads), so one process already uses every core and the app's own registry is exact. With
``PRESSO_WORKERS`` > 1 (:mod:`presso.service.multiprocess`) prometheus-client's multiprocess mode takes
over: :func:`exposition` aggregates every worker's files; gauges say how (``livesum``: summed over
live workers; ``livemin`` for readiness: 1 only when every live worker is ready).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from presso.service.tasks import ROUTES as INFERENCE_ENDPOINTS  # one per task plug-in

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
INFERENCE_STATUSES = ("200", "400", "401", "404", "405", "408", "413", "422", "429", "499", "500", "503", "504")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("presso_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.request_latency = Histogram("presso_request_duration_seconds", "HTTP request latency",
                                         ["endpoint", "status"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.inflight = Gauge("presso_inflight_requests", "inference requests being served (the autoscaling "
                              "signal: it rises with queueing before CPU saturates)", ["endpoint"], registry=r,
                              multiprocess_mode="livesum")
        self.batch_size = Histogram("presso_batch_size", "sequences per inference batch", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_tokens = Histogram("presso_batch_tokens", "padded tokens per batch (longest x sequences)",
                                      ["model"], buckets=TOKEN_BUCKETS, registry=r)
        self.padding_ratio = Histogram("presso_padding_ratio", "share of a batch's padded tokens that are padding",
                                       ["model"], buckets=RATIO_BUCKETS, registry=r)
        self.queue_depth = Gauge("presso_queue_depth", "sequences waiting for a batch", ["model"], registry=r,
                                 multiprocess_mode="livesum")
        self.queue_tokens = Gauge("presso_queue_tokens", "tokens waiting for a batch", ["model"], registry=r,
                                  multiprocess_mode="livesum")
        self.inference_latency = Histogram("presso_inference_duration_seconds",
                                           "ONNX Runtime time per batch", ["model"],
                                           buckets=LATENCY_BUCKETS_S, registry=r)
        self.queue_wait = Histogram("presso_queue_wait_seconds", "time a sequence waited before its batch ran",
                                    ["model"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.rejected = Counter("presso_rejected_requests", "requests refused with 429 (queue over its bound)",
                                ["model"], registry=r)
        self.timed_out = Counter("presso_timed_out_requests", "requests answered 504 (deadline passed)",
                                 ["model"], registry=r)
        self.route_texts = Counter("presso_route_texts", "texts per route and model: answered there or escalated to "
                                   "the next model (cascades); scored by the router or routed to an expert "
                                   "(router routes)", ["route", "model", "outcome"], registry=r)
        self.ready = Gauge("presso_ready", "1 when every model is loaded and warmed up", registry=r,
                           multiprocess_mode="livemin")
        for endpoint in INFERENCE_ENDPOINTS:
            self.inflight.labels(endpoint=endpoint).set(0)
            for status in INFERENCE_STATUSES:
                self.requests.labels(endpoint=endpoint, status=status)

    def register_model(self, name: str) -> None:
        """Create the per-model series at zero so they exist before the first request."""
        for histogram in (self.batch_size, self.batch_tokens, self.padding_ratio, self.inference_latency,
                          self.queue_wait):
            histogram.labels(model=name)
        for gauge in (self.queue_depth, self.queue_tokens):
            gauge.labels(model=name).set(0)
        for counter in (self.rejected, self.timed_out):
            counter.labels(model=name)


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``, or of every worker's values in multiprocess mode."""
    import os

    from prometheus_client import generate_latest

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)

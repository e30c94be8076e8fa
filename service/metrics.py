"""Prometheus metrics (base units: seconds). One process serves with a thread pool per model, so
the default registry is exact; metric objects are created per app so tests can build many apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("presso_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.request_latency = Histogram("presso_request_duration_seconds", "HTTP request latency",
                                         ["endpoint", "status"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.batch_size = Histogram("presso_batch_size", "texts per inference batch", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("presso_queue_depth", "texts waiting for a batch", ["model"], registry=r)
        self.inference_latency = Histogram("presso_inference_duration_seconds",
                                           "ONNX Runtime time per batch", ["model"],
                                           buckets=LATENCY_BUCKETS_S, registry=r)
        self.queue_wait = Histogram("presso_queue_wait_seconds", "time a text waited before its batch ran",
                                    ["model"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.inflight = Gauge("presso_inflight_requests", "inference requests being served (the autoscaling "
                              "signal: it rises with queueing before CPU saturates)", ["endpoint"], registry=r)
        self.ready = Gauge("presso_ready", "1 when every model is loaded and warmed up", registry=r)

    def register_model(self, name: str) -> None:
        """Create the per-model series at zero so they exist before the first request."""
        self.batch_size.labels(model=name)
        self.queue_depth.labels(model=name).set(0)
        self.inference_latency.labels(model=name)
        self.queue_wait.labels(model=name)

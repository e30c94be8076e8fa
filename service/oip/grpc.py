"""Open Inference Protocol over gRPC (KServe ``grpc_predict_v2.proto``, Triton's
``inference.GRPCInferenceService``): the same data plane, batchers, limits, deadlines, API keys and
metrics as the REST endpoints. Off unless ``PRESSO_GRPC_PORT`` is set; needs the ``grpc`` extra.

The messages and service stubs are the ones ``tritonclient[grpc]`` ships (Triton's proto is a
superset of KServe's, same package and field numbers), so no generated code lives here. Served:
``ServerLive``, ``ServerReady``, ``ServerMetadata``, ``ModelReady``, ``ModelMetadata`` and
``ModelInfer``; every other method answers ``UNIMPLEMENTED``.

``ModelInfer`` takes one ``BYTES`` input named ``text`` of shape ``[n]`` (or ``[n, 1]``), in
``raw_input_contents`` (4-byte little-endian length then UTF-8 bytes per element, as tritonclient
sends it) or ``contents.bytes_contents``, and answers the outputs of :data:`codec.OUTPUTS` in
``raw_output_contents``. The request deadline is the gRPC deadline, or ``parameters.timeout_ms``,
or the service's default, whichever is shortest. Errors are gRPC status codes
(:data:`GRPC_CODES`) with the same messages as REST.

API keys: metadata ``authorization: Bearer <key>`` or ``x-api-key: <key>``.
"""

from __future__ import annotations

import logging
import struct
import time

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from presso.service import errors
from presso.service.dataplane import DataPlane
from presso.service.httputil import http_status
from presso.service.middleware import ApiKeys
from presso.service.oip.codec import (INPUT_NAME, InferRequest, ProtocolError, bytes_elements, check_outputs,
                                      element_name, model_metadata, output_tensors)
from presso.service.registry import LoadedModel

log = logging.getLogger(__name__)
ENDPOINT = "grpc ModelInfer"  # the metric ``endpoint`` label of gRPC inference calls
# HTTP status of the data plane's error -> gRPC status (the mapping of gRPC's HTTP/2 spec, reversed).
GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
              404: grpc.StatusCode.NOT_FOUND, 409: grpc.StatusCode.ABORTED,
              413: grpc.StatusCode.INVALID_ARGUMENT, 422: grpc.StatusCode.INVALID_ARGUMENT,
              429: grpc.StatusCode.RESOURCE_EXHAUSTED, 499: grpc.StatusCode.CANCELLED,
              503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}
RAW_DTYPES = {"FP32": "<f4", "INT64": "<i8", "BOOL": "?"}


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def parse_model_infer(request, max_texts: int) -> InferRequest:
    """The texts and options of a ``ModelInferRequest`` (pure; no server).

    Raises:
        ProtocolError: not one ``BYTES`` input named ``text`` of shape ``[n]``/``[n, 1]``, bad raw data,
            too many texts, or a bad ``timeout_ms`` parameter.
    """
    if len(request.inputs) != 1:
        raise ProtocolError(f"'inputs' must hold exactly one input, a BYTES tensor named {INPUT_NAME!r}")
    tensor = request.inputs[0]
    where = f"inputs[0] ({tensor.name!r})"
    if tensor.name != INPUT_NAME:
        raise ProtocolError(f"unknown input {tensor.name[:100]!r}; this model takes {INPUT_NAME!r}")
    if tensor.datatype != "BYTES":
        raise ProtocolError(f"{where}: datatype must be BYTES, not {tensor.datatype[:20]!r}")
    shape = list(tensor.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 0:
        raise ProtocolError(f"{where}: shape must be [n] or [n, 1], not {str(shape)[:50]}")
    n = shape[0]
    if n == 0:
        raise ProtocolError(f"{where}: no texts (shape [0])")
    if n > max_texts:
        raise ProtocolError(f"{where}: {n} texts, at most {max_texts} per request")
    if request.raw_input_contents:
        if len(request.raw_input_contents) != 1:
            raise ProtocolError("raw_input_contents must hold one entry per input (one)")
        raw = bytes_elements(request.raw_input_contents[0], where)
    else:
        raw = list(tensor.contents.bytes_contents)
    if len(raw) != n:
        raise ProtocolError(f"{where}: shape says {n} texts, data has {len(raw)}")
    try:
        texts = [item.decode("utf-8") for item in raw]
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{where}: an element is not UTF-8 ({exc.reason})") from None
    timeout_ms = None
    if "timeout_ms" in request.parameters:
        param = request.parameters["timeout_ms"]
        if param.WhichOneof("parameter_choice") != "int64_param" or not 1 <= param.int64_param <= 600_000:
            raise ProtocolError("parameters.timeout_ms must be an integer from 1 to 600000")
        timeout_ms = int(param.int64_param)
    names = [o.name for o in request.outputs] or None
    return InferRequest(texts=texts, id=request.id or None, outputs=names, timeout_ms=timeout_ms)


def raw_contents(tensor: dict) -> bytes:
    """A codec output tensor (``datatype``, ``data``) as the protocol's raw row-major bytes."""
    if tensor["datatype"] == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in (s.encode("utf-8") for s in tensor["data"]))
    return np.asarray(tensor["data"], dtype=RAW_DTYPES[tensor["datatype"]]).tobytes()


def infer_response(model: LoadedModel, results: list[dict], names: list[str], request_id: str | None):
    tensors = output_tensors(model.task, results, model.labels, names)
    return pb.ModelInferResponse(
        model_name=model.name, model_version=model.version, id=request_id or "",
        outputs=[pb.ModelInferResponse.InferOutputTensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                 for t in tensors],
        raw_output_contents=[raw_contents(t) for t in tensors])


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The protocol's methods over ``plane`` (each answers or aborts with a status; never raises)."""

    def __init__(self, plane: DataPlane, version: str) -> None:
        self.plane, self.version = plane, version
        self.keys = ApiKeys(None, plane.settings)

    def _authorize(self, context) -> None:
        if not self.keys.enabled:
            return
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        keys = self.keys.current_keys() if self.plane.settings.api_keys_file else self.keys.keys
        encode = lambda v: v.encode() if isinstance(v, str) else v  # noqa: E731
        if not self.keys.matches(encode(metadata.get("authorization")), encode(metadata.get("x-api-key")), keys):
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key")

    def _find(self, name: str, version: str) -> LoadedModel:
        if not self.plane.ready:
            raise errors.NotReady("models are loading or the service is shutting down")
        model = self.plane.models.get(name)
        if model is None:
            raise errors.UnknownModel(f"no model named {name[:100]!r}; loaded: {sorted(self.plane.models)}")
        if version and version != model.version:
            raise errors.UnknownModel(f"model {name!r} has version {model.version}, not {version[:100]!r}")
        return model

    async def _answer(self, context, call, protected: bool = True):
        try:
            if protected:
                self._authorize(context)
            return await call()
        except Refused as exc:
            await context.abort(exc.code, exc.message)
        except ProtocolError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except errors.ServiceError as exc:
            where = element_name(exc.field) if exc.location == "body" else None
            await context.abort(GRPC_CODES.get(http_status(exc), grpc.StatusCode.INTERNAL),
                                f"{where}: {exc.message}" if where else exc.message)
        except grpc.aio.AbortError:
            raise
        except Exception:  # answered here, as the REST transport does
            log.exception("unhandled error")
            await context.abort(grpc.StatusCode.INTERNAL, "unexpected error while answering the request")

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.plane.serving)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="presso", version=self.version, extensions=[])

    async def ModelReady(self, request, context):
        async def call():
            self._find(request.name, request.version)
            return pb.ModelReadyResponse(ready=self.plane.serving)
        return await self._answer(context, call)

    async def ModelMetadata(self, request, context):
        async def call():
            model = self._find(request.name, request.version)
            meta = model_metadata(model.name, model.version, model.task, model.labels)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"],
                inputs=[tensor(**t) for t in meta["inputs"]], outputs=[tensor(**t) for t in meta["outputs"]])
        return await self._answer(context, call)

    async def ModelInfer(self, request, context):
        arrived_at, status = time.monotonic(), grpc.StatusCode.OK
        plane = self.plane
        plane.last_request_at = arrived_at

        async def call():
            if plane.draining:
                raise errors.ShuttingDown("the service is shutting down; retry on another replica")
            model = self._find(request.model_name, request.model_version)
            parsed = parse_model_infer(request, plane.settings.max_texts_per_request)
            names = check_outputs(model.task, parsed.outputs)
            timeout_ms = parsed.timeout_ms or plane.settings.request_timeout_ms
            remaining_s = context.time_remaining()
            if remaining_s is not None:
                timeout_ms = max(1.0, min(timeout_ms, remaining_s * 1000.0))
            loaded, results = await plane.infer(model.task, parsed.texts, model=model.name, timeout_ms=timeout_ms,
                                                arrived_at=arrived_at)
            return infer_response(loaded, results, names, parsed.id)

        inflight = plane.metrics.inflight.labels(endpoint=ENDPOINT)
        inflight.inc()
        plane.active += 1
        try:
            return await self._answer(context, call)
        except BaseException:
            status = context.code() or grpc.StatusCode.UNKNOWN
            raise
        finally:
            plane.active -= 1
            inflight.dec()
            label = str(GRPC_HTTP.get(status, 500)) if status != grpc.StatusCode.OK else "200"
            elapsed_s = time.monotonic() - arrived_at
            plane.metrics.requests.labels(endpoint=ENDPOINT, status=label).inc()
            plane.metrics.request_latency.labels(endpoint=ENDPOINT, status=label).observe(elapsed_s)


GRPC_HTTP = {code: status for status, code in GRPC_CODES.items() if status not in (413, 422)}


async def start(plane: DataPlane, version: str, host: str, port: int):
    """Serve the protocol on ``host:port`` (``SO_REUSEPORT``, so several workers share the port);
    messages up to ``settings.max_body_bytes``. Returns the started ``grpc.aio.Server``
    (``await server.stop(grace_s)`` drains it).

    Raises:
        RuntimeError: the port cannot be bound.
    """
    limit = plane.settings.max_body_bytes
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", max(limit, 64 * 1024 * 1024)),
                                      ("grpc.so_reuseport", 1)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(plane, version), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"cannot bind gRPC port {address} (PRESSO_GRPC_PORT)")
    await server.start()
    log.info("Open Inference Protocol over gRPC on %s", address)
    return server

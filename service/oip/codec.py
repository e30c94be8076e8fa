"""Open Inference Protocol (KServe v2 / Triton REST) bodies: pure parsing and encoding, no server.

Request (``POST /v2/models/{name}/infer``): one ``BYTES`` input named ``text`` of shape ``[n]``
(or ``[n, 1]``) holding the texts, as JSON ``data`` or in the binary tensor data extension
(``Inference-Header-Content-Length`` header; each element a 4-byte little-endian length then its
UTF-8 bytes). Optional ``outputs`` (names) selects outputs; ``parameters.timeout_ms`` is the
request deadline as in Presso's own API.

Outputs, row-major ``data`` with their ``shape`` (see :data:`OUTPUTS`):

* sequence classification: ``label`` BYTES ``[n]``, ``score`` FP32 ``[n]``, ``scores`` FP32
  ``[n, num_labels]`` in the model's label order (``parameters.labels`` of the model metadata),
  ``truncated`` BOOL ``[n]``;
* token classification: one row per entity span, all texts together: ``entity_text_index`` INT64
  ``[m]`` (the text it is in), ``entity_label`` BYTES ``[m]``, ``entity_text`` BYTES ``[m]``,
  ``entity_start`` / ``entity_end`` INT64 ``[m]`` (code-point offsets, end exclusive),
  ``entity_score`` FP32 ``[m]``; ``windows`` INT64 ``[n]``.

Spec: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ and Triton's
binary tensor data extension (``docs/protocol/extension_binary_data.md``).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from presso.core.manifest import Task

INPUT_NAME = "text"
HEADER_LENGTH = "inference-header-content-length"

OUTPUTS: dict[Task, dict[str, str]] = {
    Task.SEQUENCE_CLASSIFICATION: {"label": "BYTES", "score": "FP32", "scores": "FP32", "truncated": "BOOL"},
    Task.TOKEN_CLASSIFICATION: {"entity_text_index": "INT64", "entity_label": "BYTES", "entity_text": "BYTES",
                                "entity_start": "INT64", "entity_end": "INT64", "entity_score": "FP32",
                                "windows": "INT64"},
}


class ProtocolError(ValueError):
    """A request the protocol cannot accept (the server answers 400 ``{"error": message}``)."""


def element_name(field: str | None) -> str | None:
    """A data-plane field (``texts.3``, ``text``) as the protocol's input element it came from."""
    if field is None:
        return None
    if field in ("text", "texts"):
        return f"inputs[0] ({INPUT_NAME!r})"
    if field.startswith("texts."):
        return f"inputs[0] ({INPUT_NAME!r}) element {field.removeprefix('texts.')}"
    return f"parameters.{field}" if field == "timeout_ms" else field


@dataclass
class InferRequest:
    texts: list[str]
    id: str | None
    outputs: list[str] | None  # None: every output
    timeout_ms: int | None


def bytes_elements(blob: bytes, where: str) -> list[bytes]:
    """Elements of a BYTES tensor in the binary extension's layout."""
    out, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise ProtocolError(f"{where}: binary BYTES data ends inside an element length")
        (size,) = struct.unpack_from("<I", blob, at)
        at += 4
        if at + size > len(blob):
            raise ProtocolError(f"{where}: binary BYTES element of {size} bytes runs past the data")
        out.append(blob[at: at + size])
        at += size
    return out


def _flat(data, where: str) -> list:
    if not isinstance(data, list):
        raise ProtocolError(f"{where}.data must be an array")
    if data and all(isinstance(row, list) for row in data):  # shape [n, 1] given nested
        return [item for row in data for item in row]
    return data


def parse_infer(body: bytes, header_length: str | None, max_texts: int) -> InferRequest:
    """The texts and options of an infer request body.

    Args:
        body: the whole request body.
        header_length: the ``Inference-Header-Content-Length`` header (binary extension) or None.
        max_texts: more texts than this is an error (the data plane's limit, checked early).

    Raises:
        ProtocolError: not JSON, not the protocol's shape, no ``text`` BYTES input, or bad binary data.
    """
    binary = b""
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit() and len(header_length) <= 19) \
                or int(header_length) > len(body):
            raise ProtocolError("Inference-Header-Content-Length is not a length within the body")
        body, binary = body[: int(header_length)], body[int(header_length):]
    try:
        request = json.loads(body.decode("utf-8-sig"))  # JSON is UTF-8; bytes would also take UTF-16/32
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"request body is not valid JSON: {exc}"[:300]) from None
    except RecursionError:
        raise ProtocolError("request body is nested too deeply") from None
    if not isinstance(request, dict):
        raise ProtocolError("request body must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(f"'inputs' must hold exactly one input, a BYTES tensor named {INPUT_NAME!r}")
    tensor = inputs[0]
    where = f"inputs[0] ({tensor.get('name')!r})"
    if tensor.get("name") != INPUT_NAME:
        raise ProtocolError(f"unknown input {str(tensor.get('name'))[:100]!r}; this model takes {INPUT_NAME!r}")
    if tensor.get("datatype") != "BYTES":
        raise ProtocolError(f"{where}: datatype must be BYTES, not {str(tensor.get('datatype'))[:20]!r}")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            or not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))):
        raise ProtocolError(f"{where}: shape must be [n] or [n, 1], not {str(shape)[:50]}")
    n = shape[0]
    if n == 0:
        raise ProtocolError(f"{where}: no texts (shape [0])")
    if n > max_texts:
        raise ProtocolError(f"{where}: {n} texts, at most {max_texts} per request")
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(f"{where}: parameters must be an object")
    if binary and "binary_data_size" not in params:
        raise ProtocolError(f"{where}: binary data follows the JSON header but the input has no binary_data_size")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool):
            raise ProtocolError(f"{where}: binary_data_size must be an integer")
        if size != len(binary):
            raise ProtocolError(f"{where}: binary_data_size {str(size)[:20]} does not match the {len(binary)} "
                                "bytes after the JSON header")
        raw = bytes_elements(binary, where)
        try:
            texts = [item.decode("utf-8") for item in raw]
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{where}: an element is not UTF-8 ({exc.reason})") from None
    else:
        if "data" not in tensor:
            raise ProtocolError(f"{where}: no data (JSON 'data' or binary_data_size)")
        texts = _flat(tensor["data"], where)
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise ProtocolError(f"{where}: every element of a BYTES tensor must be a string; element {bad} is "
                                f"{type(texts[bad]).__name__}")
    if len(texts) != n:
        raise ProtocolError(f"{where}: shape says {n} texts, data has {len(texts)}")
    outputs = request.get("outputs")
    names = None
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                    for o in outputs):
            raise ProtocolError("'outputs' must be a list of objects with a 'name'")
        names = [o["name"] for o in outputs]
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")
    timeout_ms = parameters.get("timeout_ms")
    if isinstance(timeout_ms, float) and timeout_ms.is_integer():  # as Presso's own API: 100.0 is 100
        timeout_ms = int(timeout_ms)
    if timeout_ms is not None and (not isinstance(timeout_ms, int) or isinstance(timeout_ms, bool)
                                   or not 1 <= timeout_ms <= 600_000):
        raise ProtocolError("parameters.timeout_ms must be an integer from 1 to 600000")
    rid = request.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ProtocolError("'id' must be a string")
    return InferRequest(texts=texts, id=rid, outputs=names, timeout_ms=timeout_ms)


def check_outputs(task: Task, names: list[str] | None) -> list[str]:
    """The outputs to return, in the requested order (all when ``names`` is None).

    Raises:
        ProtocolError: an output this task does not have.
    """
    known = OUTPUTS[task]
    if names is None:
        return list(known)
    for name in names:
        if name not in known:
            raise ProtocolError(f"unknown output {name[:100]!r}; this model has {sorted(known)}")
    return names


def output_tensors(task: Task, results: list[dict], labels: list[str], names: list[str]) -> list[dict]:
    """The protocol's output tensors from the data plane's per-text results (the task plug-in's
    fields, see :mod:`presso.service.tasks`)."""
    n = len(results)
    if task == Task.SEQUENCE_CLASSIFICATION:
        columns = {
            "label": ([r["label"] for r in results], [n]),
            "score": ([r["score"] for r in results], [n]),
            "scores": ([r["scores"][label] for r in results for label in labels], [n, len(labels)]),
            "truncated": ([r["truncated"] for r in results], [n]),
        }
    else:
        spans = [(i, e) for i, r in enumerate(results) for e in r["entities"]]
        m = len(spans)
        columns = {
            "entity_text_index": ([i for i, _ in spans], [m]),
            "entity_label": ([e["label"] for _, e in spans], [m]),
            "entity_text": ([e["text"] for _, e in spans], [m]),
            "entity_start": ([e["start"] for _, e in spans], [m]),
            "entity_end": ([e["end"] for _, e in spans], [m]),
            "entity_score": ([e["score"] for _, e in spans], [m]),
            "windows": ([r["windows"] for r in results], [n]),
        }
    dtypes = OUTPUTS[task]
    return [{"name": name, "datatype": dtypes[name], "shape": columns[name][1], "data": columns[name][0]}
            for name in names]


def model_metadata(name: str, version: str, task: Task, labels: list[str]) -> dict:
    """``GET /v2/models/{name}``: the model's input and outputs (shapes with -1 for variable sizes)."""
    variable = {"scores": [-1, len(labels)]}
    outputs = [{"name": out, "datatype": dtype, "shape": variable.get(out, [-1])}
               for out, dtype in OUTPUTS[task].items()]
    return {"name": name, "versions": [version], "platform": "onnxruntime_onnx",
            "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}], "outputs": outputs,
            "parameters": {"task": task.value, "labels": labels}}

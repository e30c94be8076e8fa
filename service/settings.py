"""Service configuration: one pydantic-settings class, environment prefix ``PRESSO_``.

Built once at startup (:func:`presso.service.server.run` / :func:`presso.service.api.create_app`), never at import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRESSO_", extra="forbid")

    host: str = Field("127.0.0.1", description="bind address")
    port: int = Field(8000, ge=1, le=65535, description="bind port")
    models_dir: Path = Field(Path("models"), description="directory holding one artifact folder per model")
    workers: int = Field(1, ge=1, description="API processes; > 1 runs gunicorn with uvicorn workers (a dead "
                         "worker is replaced, metrics aggregated across processes); each loads every model")
    # -- dynamic batching (service.batching.BatchLimits) --
    max_batch_size: int = Field(32, ge=1, description="most sequences in one inference batch")
    max_batch_tokens: int = Field(4096, ge=1, description="most padded tokens in one batch "
                                  "(longest sequence x sequences)")
    max_wait_ms: float = Field(0.0, ge=0, description="longest wait for more sequences after a batch's first "
                               "arrived; 0 = take what is queued when a worker frees up")
    sort_window: int = Field(128, ge=1, description="oldest queued sequences a batch is chosen from by length")
    padding_tolerance_tokens: int = Field(8, ge=0, description="most padding tokens one sequence may add to a "
                                          "batch; about the per-batch fixed cost in tokens (CPU ~10, GPU hundreds)")
    max_queued_tokens: int = Field(262_144, ge=1, description="queued tokens per model before answering 429")
    max_queue_items: int = Field(4096, ge=1, description="queued sequences per model before answering 429")
    request_timeout_ms: float = Field(30_000, gt=0, description="deadline of a request without 'timeout_ms' (504)")
    inference_threads: int = Field(0, ge=0, description="batches run concurrently per model (worker threads); "
                                   "0 = one per core left by intra_op_threads")
    intra_op_threads: int = Field(1, ge=0, description="ONNX Runtime threads per operator; 0 = all cores")
    all_cores_when_idle: bool = Field(True, description="a batch that runs while nothing else runs or waits, "
                                      "holding every waiting request's texts, uses a second session on every core "
                                      "and holds them all (low latency at low load)")
    inline_max_ms: float = Field(5.0, ge=0, description="a lone batch (every core idle, nothing queued) expected "
                                 "to take at most this long (its tokens times the model's recent seconds per token) "
                                 "runs on the event loop's thread, skipping the hand-offs to an inference thread "
                                 "and back (the loop waits for that one call); 0 = always on an inference thread")
    intra_op_spinning: bool = Field(False, description="intra-op threads of the main session busy-wait between "
                                    "operators (ONNX Runtime's default; off leaves cores to the event loop; the "
                                    "all-cores session always spins)")
    # -- long texts --
    ner_window_stride_tokens: int = Field(32, ge=0, description="tokens shared by consecutive NER windows of a "
                                          "text longer than the model's max_seq_len")
    classify_long_text: Literal["truncate", "reject"] = Field(
        "truncate", description="texts over max_seq_len on /classify: truncate (flagged) or answer 422")
    # -- request limits --
    max_texts_per_request: int = Field(256, ge=1, description="longest 'texts' list accepted (413 beyond)")
    max_text_chars: int = Field(20_000, ge=1, description="longest text accepted in characters (413 beyond)")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1, description="largest request body in bytes; 413 before "
                                "reading more (Content-Length or chunked)")
    body_read_timeout_s: float = Field(30.0, gt=0, description="longest time to receive a request body (408 "
                                       "beyond: a stalled upload does not hold a connection)")
    max_header_bytes: int = Field(65536, ge=1024, description="largest request head (request line + headers) "
                                  "in bytes; 431 beyond")
    header_read_timeout_s: float = Field(10.0, gt=0, description="longest time to receive a request's headers "
                                         "after connecting or after the previous response (408 beyond)")
    routes_file: Path | None = Field(None, description="YAML or JSON file of named routes (confidence cascades, "
                                     "top-k expert routers) over the loaded models; checked at startup (see README, "
                                     "Routes)")
    warmup: bool = Field(True, description="run one inference per model before reporting ready")
    shutdown_grace_s: float = Field(30.0, gt=0, description="on SIGTERM, longest wait for accepted requests "
                                    "to finish")
    # -- security and operations --
    api_keys: SecretStr | None = Field(None, description="comma-separated API keys; when set (or api_keys_file), "
                                       "/ner, /classify and /models* need 'Authorization: Bearer <key>' or "
                                       "'X-API-Key: <key>' (401 otherwise)")
    api_keys_file: Path | None = Field(None, description="file with one API key per line (e.g. a mounted "
                                       "Kubernetes Secret); '#' starts a comment")
    grpc_port: int | None = Field(None, ge=1, le=65535, description="also serve the Open Inference Protocol over "
                                  "gRPC on this port (KServe grpc_predict_v2; needs the grpc extra)")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="serve /metrics on this port instead of "
                                     "the API port")
    log_level: Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"] = Field(
        "INFO", description="Python logging level")
    log_format: Literal["json", "text"] = Field("json", description="json: one object per line with request_id; "
                                                "text: for humans")

    @field_validator("log_level", mode="before")
    @classmethod
    def upper_case_level(cls, value):
        return value.upper() if isinstance(value, str) else value

    @field_validator("grpc_port")
    @classmethod
    def grpc_installed(cls, value):
        import importlib.util

        if value is not None and (importlib.util.find_spec("grpc") is None
                                  or importlib.util.find_spec("tritonclient") is None):
            raise ValueError("gRPC needs grpcio and tritonclient[grpc]: pip install 'presso[grpc]'")
        return value

    @model_validator(mode="after")
    def keys_file_readable(self) -> "Settings":
        if self.api_keys_file is not None and not os.access(self.api_keys_file, os.R_OK):
            raise ValueError(f"api_keys_file {self.api_keys_file} is not a readable file")
        return self

    def api_key_list(self) -> list[bytes]:
        """Every configured API key, UTF-8 encoded (empty: no authentication).

        Raises:
            OSError: ``api_keys_file`` cannot be read.
        """
        keys = self.api_keys.get_secret_value().split(",") if self.api_keys else []
        if self.api_keys_file is not None:
            keys += [line.split("#", 1)[0] for line in self.api_keys_file.read_text().splitlines()]
        return [k.strip().encode() for k in keys if k.strip()]

    def inference_workers(self) -> int:
        """``inference_threads``, or when 0 one worker per core the intra-op threads leave: on a
        CPU, batches running side by side on one core each beat one batch spread over all cores
        for models this small (measured in reports/serve-bench.json)."""
        if self.inference_threads:
            return self.inference_threads
        return max(1, available_cores() // self.intra_op_threads) if self.intra_op_threads else 1


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


NOT_SETTINGS = ("PRESSO_PODMAN_DIR", "PRESSO_WRK_")  # used by the project's scripts, not by the service


def unknown_variables(environ: dict[str, str]) -> list[str]:
    """``PRESSO_*`` variables that name no setting (a typo would otherwise be ignored silently)."""
    known = {f"PRESSO_{name.upper()}" for name in Settings.model_fields}
    return sorted(k for k in environ if k.startswith("PRESSO_") and k not in known and not k.startswith(NOT_SETTINGS))

"""Service configuration: one pydantic-settings class, environment prefix ``PRESSO_``.

Built once at startup (:func:`service.server.run` / :func:`service.api.create_app`), never at import.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRESSO_", extra="forbid")

    host: str = Field("127.0.0.1", description="bind address")
    port: int = Field(8000, ge=1, le=65535, description="bind port")
    models_dir: Path = Field(Path("models"), description="directory holding one artifact folder per model")
    max_batch_size: int = Field(32, ge=1, description="most texts in one inference batch")
    max_wait_ms: float = Field(5.0, ge=0, description="longest wait for more texts after a batch's first")
    inference_threads: int = Field(1, ge=1, description="batches run concurrently per model (worker threads)")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads per operator; 0 = all cores")
    max_texts_per_request: int = Field(256, ge=1, description="longest 'texts' list accepted (413 beyond)")
    max_text_chars: int = Field(20_000, ge=1, description="longest text accepted in characters (413 beyond)")
    max_queue_items: int = Field(4096, ge=1, description="queued texts per model before answering 429")
    warmup: bool = Field(True, description="run one inference per model before reporting ready")
    log_level: str = Field("INFO", description="Python logging level")

# syntax=docker/dockerfile:1
# Serving image: ONNX Runtime + FastAPI, no torch. Models are mounted read-only at /models, or baked
# in with `--build-arg MODELS_SRC=models` (a directory of artifacts in the build context).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# cpu or gpu: the two ONNX Runtime builds are mutually exclusive extras. Add ",compress" to be able
# to run `presso build` inside the container (adds torch: a much larger image).
ARG EXTRAS=cpu
# CA bundle path for builds behind a TLS-intercepting proxy (mounted at build time, not kept).
ARG PIP_CERT=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CERT=${PIP_CERT}
WORKDIR /src
RUN python3 -m venv /opt/presso
COPY pyproject.toml README.md ./
COPY presso ./presso
COPY core ./core
COPY service ./service
COPY compress ./compress
RUN /opt/presso/bin/pip install ".[${EXTRAS}]"

FROM ${BASE_IMAGE} AS runtime
ARG MODELS_SRC=deploy/no-models
RUN groupadd --system --gid 10001 presso && useradd --system --uid 10001 --gid presso --no-create-home presso
COPY --from=build /opt/presso /opt/presso
COPY ${MODELS_SRC} /models
ENV PATH=/opt/presso/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PRESSO_HOST=0.0.0.0 \
    PRESSO_PORT=8000 \
    PRESSO_MODELS_DIR=/models
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PRESSO_PORT']}/health/ready\", timeout=2)"]
# exec form: presso is PID 1 and receives SIGTERM directly; uvicorn drains in-flight requests.
CMD ["presso", "serve"]

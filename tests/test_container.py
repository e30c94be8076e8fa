"""The project's own Dockerfile built and run for real with podman (no Docker daemon here), and the
compose stack brought up with podman-compose: the service plus a Prometheus that scrapes it.

Needs root, podman, runc, debootstrap and podman-compose (`make test-container` installs them);
skipped where they are missing. Images that cannot be pulled are replaced: the base image is made
with debootstrap, Prometheus by a stand-in built from it (deploy/podman/prometheus.Containerfile),
and Grafana (not packaged by Debian) is left out by the override's profile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from presso.bench.net import free_port, wait_ready
from tests.fakes import write_artifact

pytestmark = pytest.mark.container
ROOT = Path(__file__).resolve().parent.parent
PODMAN_DIR = Path(os.environ.get("PRESSO_PODMAN_DIR", "/tmp/presso-podman"))
IMAGE = "localhost/presso:test"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

if not (shutil.which("podman") and shutil.which("debootstrap") and os.geteuid() == 0):
    pytest.skip("needs root, podman and debootstrap", allow_module_level=True)


def podman_env() -> dict[str, str]:
    out = subprocess.run(["bash", "-c", f". {ROOT}/deploy/podman/env.sh && env"], capture_output=True, text=True,
                         check=True, env={**os.environ, "PRESSO_PODMAN_DIR": str(PODMAN_DIR)}).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


ENV = podman_env()


def podman(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=ENV, capture_output=True, text=True, check=check, timeout=timeout)


def ca_flags() -> list[str]:
    # Builds behind a TLS-intercepting proxy: mount the host's CA bundle for pip (not kept in the image).
    if not CA_BUNDLE.exists():
        return []
    return ["--volume", f"{CA_BUNDLE}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]


@pytest.fixture(scope="module")
def image() -> str:
    subprocess.run(["bash", str(ROOT / "deploy/podman/base-image.sh")], env=ENV, check=True, timeout=900)
    podman("build", "--format", "docker", "--network", "host", *ca_flags(),
           "--build-arg", "BASE_IMAGE=localhost/debian-python:bookworm", "-t", IMAGE, str(ROOT))
    return IMAGE


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("container-models")
    write_artifact(root, "fake-ner", "ner")
    write_artifact(root, "fake-sentiment", "classify")
    for p in [root, *root.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)  # readable by the image's non-root user
    return root


def test_image_serves_as_non_root_read_only_and_drains_on_sigterm(image, models):
    port = free_port()
    name = f"presso-test-{port}"
    podman("run", "-d", "--name", name, "--network", "host", "-e", f"PRESSO_PORT={port}",
           "-v", f"{models}:/models:ro", "--read-only", "--tmpfs", "/tmp", image)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(f"{url}/health/ready")
        ner = httpx.post(f"{url}/ner", json={"text": "John Smith lives in Paris"}).json()
        assert [(e["label"], e["start"], e["end"]) for e in ner["entities"]] == [("PER", 0, 10), ("LOC", 20, 25)]
        assert httpx.post(f"{url}/classify", json={"text": "an awful day"}).json()["label"] == "negative"
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        assert "torch" not in podman("exec", name, "/opt/presso/bin/pip", "list").stdout
        podman("stop", "-t", "40", name)
        state = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert state == "0", podman("logs", name, check=False).stderr[-2000:]
        assert "drained" in podman("logs", name, check=False).stderr
    finally:
        podman("rm", "-f", name, check=False)


def test_compose_stack_prometheus_scrapes_the_service(image, models, tmp_path):
    compose = shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose")
    if not Path(compose).exists():
        pytest.skip("podman-compose not installed")
    port, prom_port = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "2s"},
        "scrape_configs": [{"job_name": "presso", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}))
    override = {
        "services": {
            "presso": {"image": image, "network_mode": "host", "environment": {"PRESSO_PORT": str(port)},
                       "volumes": [f"{models}:/models:ro"]},
            "prometheus": {
                "image": "localhost/prometheus-standin:test",
                "network_mode": "host",
                "build": {"context": str(ROOT / "deploy/podman"), "dockerfile": "prometheus.Containerfile"},
                "command": ["--config.file=/etc/prometheus/prometheus.yml",
                            f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.path=/tmp/tsdb"],
                "volumes": [f"{tmp_path / 'prometheus.yml'}:/etc/prometheus/prometheus.yml:ro"],
            },
            "grafana": {"profiles": ["grafana"]},
        }
    }
    (tmp_path / "override.yml").write_text(yaml.safe_dump(override))
    podman("build", "--network", "host", "-t", "localhost/prometheus-standin:test", "-f",
           str(ROOT / "deploy/podman/prometheus.Containerfile"), str(ROOT / "deploy/podman"))
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(tmp_path / "override.yml"),
             "-p", f"presso{port}"]
    run = lambda *a, **kw: subprocess.run([compose, *files, *a], env=ENV, capture_output=True, text=True,  # noqa: E731
                                          timeout=600, **kw)
    up = run("up", "-d", "--no-build")
    try:
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        try:
            wait_ready(f"http://127.0.0.1:{port}/health/ready")
        except TimeoutError:
            ps = podman("ps", "-a", "--format", "{{.Names}} {{.Status}}", check=False).stdout
            logs = "".join(podman("logs", n.split()[0], check=False).stderr[-1500:] for n in ps.splitlines()
                           if f"presso{port}" in n)
            raise AssertionError(f"compose service not ready\n{up.stdout[-1500:]}\n{ps}\n{logs}")
        wait_ready(f"http://127.0.0.1:{prom_port}/-/ready")
        deadline = time.monotonic() + 60
        while True:
            targets = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/targets").json()["data"]["activeTargets"]
            if targets and all(t["health"] == "up" for t in targets):
                break
            assert time.monotonic() < deadline, targets
            time.sleep(1)
        up_value = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/query", params={"query": 'up{job="presso"}'}).json()
        assert up_value["data"]["result"][0]["value"][1] == "1"
    finally:
        run("down", "-t", "20")

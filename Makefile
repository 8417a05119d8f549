# crossmodal: `make demo` runs the main job on the shipped data, `make test` runs the tests.
# Both install into .venv first when it is missing or older than pyproject.toml/constraints.txt.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-full bench gpu-check lint clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	WANDB_MODE=$${WANDB_MODE:-offline} $(PY) -m crossmodal.run

test: install
	WANDB_MODE=disabled $(PY) -m pytest -q

test-full: install
	WANDB_MODE=disabled $(PY) -m pytest -q -m "slow or not slow"

bench: install
	$(PY) experiments/perf/run_all.py

# The first thing to run on a GPU machine: short teacher_senet50 and distill_senet runs (1 GPU and all,
# bf16 on and off) -> gpu_check.json; without a GPU the same path on the CPU at tiny sizes (it says so)
gpu-check: install
	$(PY) experiments/scaling/gpu_check.py

# ruff, the import-linter layer contracts and deptry (declared dependencies = imports), all
# pinned in the dev extra and configured in pyproject.toml: any error fails the target
lint: install
	$(PY) -m ruff check crossmodal tests experiments setup.py
	$(VENV)/bin/lint-imports
	$(VENV)/bin/deptry .

clean:
	rm -rf $(VENV) .pytest_cache

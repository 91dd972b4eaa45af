# distillscope: `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TRAIN  := $(PY) -m distillscope.train
ARGS   ?=
ART    := artifacts

.DEFAULT_GOAL := help
.PHONY: help install test test-all teacher baseline distill explain clean sweep agent sweep-local bench

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

RUN ?= $(shell ls -td outputs/digits_kd/2*/ 2>/dev/null | head -1)
explain:  ## fidelity figures, explanation maps, surrogates for RUN=<run dir> (default: latest digits_kd run)
	@test -n "$(RUN)" || { echo "no run to explain: run \`make distill\` or pass RUN=<run dir>"; exit 2; }
	$(PY) -m distillscope.explain run_dir=$(RUN) $(ARGS)

# W&B sweeps (sweeps/*.yaml). SWEEP: the sweep file; SWEEP_ID: entity/project/id, printed by `make sweep`;
# COUNT: trials per agent (empty: until the sweep is done); GPUS: devices of this machine each trial uses.
SWEEP    ?= sweeps/kd_temperature_weights.yaml
SWEEP_ID ?=
COUNT    ?=
GPUS     ?=
comma    := ,
NGPUS     = $(words $(subst $(comma), ,$(GPUS)))
# Per-machine overrides every trial of this agent gets (the sweep's command line is the same for all agents).
AGENT_OVERRIDES = $(if $(filter 1,$(NGPUS)),trainer=gpu,$(if $(GPUS),trainer=ddp trainer.devices=$(NGPUS)))

sweep:  ## create the W&B sweep SWEEP=sweeps/<file>.yaml (after `wandb login`); prints the SWEEP_ID for agents
	$(VENV)/bin/wandb sweep $(SWEEP)

agent: $(ART)/digits_teacher.ckpt $(ART)/digits_baseline.ckpt  ## run trials of SWEEP_ID=... one at a time; COUNT=n, GPUS=0,1 (DDP over both)
	@test -n "$(SWEEP_ID)" || { echo "make agent: set SWEEP_ID=<entity/project/sweep id> (make sweep prints it)" >&2; exit 2; }
	PATH="$(abspath $(VENV))/bin:$$PATH" $(if $(GPUS),CUDA_VISIBLE_DEVICES=$(GPUS)) \
	DISTILLSCOPE_AGENT_OVERRIDES="$(AGENT_OVERRIDES)" $(VENV)/bin/wandb agent $(if $(COUNT),--count $(COUNT)) $(SWEEP_ID)

sweep-local: $(ART)/digits_teacher.ckpt $(ART)/digits_baseline.ckpt  ## SWEEP on this machine with W&B's search engine, no account (COUNT trials, default 4; ARGS per trial)
	$(PY) -m distillscope.sweep $(SWEEP) --count $(or $(COUNT),4) $(ARGS)

bench:  ## images/s: student alone, KD live, KD from the teacher cache, torchdistill (bench/results.json; ARGS=--device cuda)
	$(PY) bench/bench.py $(ARGS)

clean:  ## remove run outputs, saved artifacts and the teacher cache (keeps .venv)
	rm -rf outputs multirun $(ART) cache wandb .pytest_cache

"""Sweeps without the W&B server: W&B's schema and search engine (`sweeps`) on every sweep file, the agent's
exact command line, a real trial through the CLI fed back to the engine; the Optuna and SLURM configs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import sweeps
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins
from omegaconf import OmegaConf

from conftest import CONF_DIR, FAST, ROOT, compose_cfg, kd_overrides
from distillscope.sweep import RUN_DIR_OVERRIDE, SWEEP_ROOT, agent_command, load_sweep, proposal_params, run_local_sweep
from distillscope.train import AGENT_OVERRIDES_ENV, agent_overrides

SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))
OPTUNA_FILES = sorted((CONF_DIR / "hparams_search").glob("*.yaml"))
AGENT_PREFIX = ["${env}", "python", "-m", "distillscope.train"]


def test_the_required_searches_exist():
    params = {p.stem: set(yaml.safe_load(p.read_text())["parameters"]) for p in SWEEP_FILES}
    swept = set().union(*params.values())
    assert {"distill.kd.temperature", "distill.kd.weight", "distill.dkd.alpha", "distill.dkd.beta",
            "optimizer.lr", "data.batch_size"} <= swept
    assert any(key.endswith(".weight") and not key.startswith(("distill.kd.", "distill.ce.")) for key in swept), \
        "a feature-loss weight sweep"


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_file_passes_wandb_schema(path):
    text = path.read_text()
    raw = yaml.safe_load(text)
    assert sweeps.schema_violations_from_proposed_config(raw) == []
    assert text.startswith("#") and len([ln for ln in text.splitlines() if ln.startswith("#")]) >= 3, "header comment"
    assert raw["metric"]["name"] == "val/acc" and raw["metric"]["goal"] == "maximize"
    # Hydra form: every swept key arrives as a plain `dot.path=value` override after the fixed ones.
    command = raw["command"]
    assert command[:4] == AGENT_PREFIX and command[-1] == "${args_no_hyphens}"
    assert RUN_DIR_OVERRIDE in command
    assert all("=" in arg and not arg.startswith("-") for arg in command[4:-1])


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_proposals_compose_to_real_config_keys(path, tmp_path):
    """The engine's proposals, as the agent passes them, set existing keys to exactly the proposed values."""
    sweep = load_sweep(path)
    for run in sweeps.next_runs(sweep, [], n=2):
        params = proposal_params(run)
        argv = agent_command(sweep, params)
        assert argv[:4] == ["/usr/bin/env", "python", "-m", "distillscope.train"]
        cfg = compose_cfg([a for a in argv[4:] if not a.startswith("hydra.")], tmp_path)
        assert cfg.logger.wandb.project == sweep["project"], "trials must log to the sweep's W&B project"
        for key, value in params.items():
            assert OmegaConf.select(cfg, key, throw_on_missing=True) == value, key


def test_agent_command_expands_like_wandb():
    sweep = {"program": "train.py", "command": ["${env}", "${interpreter}", "${program}", "${args}", "x=1", "${args_no_hyphens}"]}
    assert agent_command(sweep, {"optimizer.lr": 0.01, "data.batch_size": 64}) == [
        "/usr/bin/env", "python", "train.py", "--optimizer.lr=0.01", "--data.batch_size=64",
        "x=1", "optimizer.lr=0.01", "data.batch_size=64",
    ]


def test_local_sweep_runs_a_trial_and_feeds_the_engine(teacher_ckpt, tmp_path):
    """One proposal runs as the agent's command through the real CLI; its per-epoch val/acc goes back."""
    path = ROOT / "sweeps" / "kd_temperature_weights.yaml"
    extra = [*kd_overrides(teacher_ckpt, *FAST)[1:], "trainer.max_epochs=2"]
    runs = run_local_sweep(path, count=1, extra=extra, cwd=tmp_path)
    [run] = runs
    assert run.state == "finished", "\n".join(p.read_text()[-2000:] for p in (tmp_path / SWEEP_ROOT).rglob("*.log"))
    [run_dir] = (tmp_path / SWEEP_ROOT).glob(f"*/{run.name}")
    record = json.loads((run_dir / "run.json").read_text())
    for key, value in proposal_params(run).items():  # the trial trained with the proposed values
        assert OmegaConf.select(OmegaConf.create(record["config"]), key) == pytest.approx(value)
    # val/acc once per epoch; its best is what the checkpoint callback kept and `main` returns.
    assert len(run.history) == 2 and all(set(row) == {"val/acc"} for row in run.history)
    assert max(row["val/acc"] for row in run.history) == pytest.approx(record["metrics"]["val/acc"])
    assert run.summary_metrics["val/acc"] == pytest.approx(record["metrics"]["val/acc"])

    sweep = load_sweep(path)
    proposal = sweeps.next_run(sweep, runs)
    params = proposal_params(proposal)
    assert params != proposal_params(run)
    for key, spec in sweep["parameters"].items():
        assert spec["min"] <= params[key] <= spec["max"]


def test_agent_gpus_become_trial_overrides(monkeypatch, tmp_path):
    dry = subprocess.run(["make", "-n", "agent", "SWEEP_ID=me/proj/abc", "COUNT=3", "GPUS=0,1"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "CUDA_VISIBLE_DEVICES=0,1" in dry and "wandb agent --count 3 me/proj/abc" in dry
    assert f'{AGENT_OVERRIDES_ENV}="trainer=ddp trainer.devices=2"' in dry
    monkeypatch.setenv(AGENT_OVERRIDES_ENV, "trainer=ddp trainer.devices=2")
    overrides = agent_overrides()
    assert overrides == ["trainer=ddp", "trainer.devices=2"]
    assert AGENT_OVERRIDES_ENV not in os.environ  # DDP's re-launched ranks must not add them again
    cfg = compose_cfg(overrides, tmp_path)
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2


def hydra_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("path", OPTUNA_FILES, ids=lambda p: p.stem)
def test_optuna_search_params_are_config_keys(path):
    cfg = hydra_cfg(["experiment=digits_kd", f"hparams_search={path.stem}"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.optimized_metric == "val/acc"
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key, throw_on_missing=True) is not None, key


@pytest.mark.slow
def test_optuna_multirun_through_cli(teacher_ckpt, tmp_path):
    from conftest import run_cli

    result = run_cli(["-m", *kd_overrides(teacher_ckpt, *FAST), "hparams_search=kd_optuna",
                      "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path}/multirun"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"distill.kd.temperature", "distill.kd.weight", "distill.ce.weight"}
    assert 0.0 <= best["best_value"] <= 1.0


def test_slurm_launcher_takes_its_shape_from_the_trainer():
    cfg = hydra_cfg(["experiment=digits_kd", "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                     "trainer.num_nodes=2", "hydra.launcher.partition=gpu"])
    launcher = Plugins.instance()._instantiate(cfg.hydra.launcher)  # how Hydra builds it; nothing is submitted
    assert type(launcher).__name__ == "SlurmLauncher"
    # One task per GPU: Lightning's SLURM environment then takes each rank from srun.
    assert (launcher.params["nodes"], launcher.params["tasks_per_node"], launcher.params["gpus_per_node"]) == (2, 4, 4)
    assert launcher.params["partition"] == "gpu"

"""Every option of every config group composes, and the pieces build with Hydra's instantiate."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from conftest import CONF_DIR, compose_cfg

GROUPS = ["data", "teacher", "student", "distill", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment"]


# Options with mandatory values (???) get one, as a user would on the command line.
REQUIRED = {
    "data=imagefolder": ["data.root=images", "data.num_classes=3"],
    "teacher=timm": ["teacher.name=resnet18"],
    "student=timm": ["student.name=resnet18"],
}


def options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option, tmp_path):
    choice = f"{group}={option}"
    cfg = compose_cfg([choice, *REQUIRED.get(choice, [])], tmp_path)
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert container["task_name"]
    for name, term in container["distill"].items():
        assert "_target_" in term, f"distill.{name} has no _target_"


def test_optimizer_scheduler_trainer_and_loggers_instantiate(tmp_path):
    import torch

    cfg = compose_cfg(["logger=csv"], tmp_path)
    params = [torch.nn.Parameter(torch.zeros(2))]
    optimizer = instantiate(cfg.optimizer)(params=params)
    scheduler = instantiate(cfg.scheduler)(optimizer=optimizer)
    assert scheduler.T_max == cfg.trainer.max_epochs
    loggers = [instantiate(c) for c in cfg.logger.values()]
    assert {type(lg).__name__ for lg in loggers} == {"CSVLogger"}
    trainer = instantiate(cfg.trainer, logger=loggers, callbacks=[instantiate(c) for c in cfg.callbacks.values()])
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_wandb_logger_is_offline_without_login(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    cfg = compose_cfg([], tmp_path)
    assert cfg.logger.wandb.offline is True
    monkeypatch.setenv("WANDB_MODE", "online")
    assert compose_cfg([], tmp_path).logger.wandb.offline is False


def test_experiment_presets_carry_the_published_recipe(tmp_path):
    cfg = compose_cfg(["experiment=cifar100_resnet32x4_resnet8x4", "teacher.checkpoint=x"], tmp_path)
    assert (cfg.student.name, cfg.data.batch_size, cfg.trainer.max_epochs) == ("cifar_resnet8x4", 64, 240)
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.05, 0.9, 0.0005)
    assert list(cfg.scheduler.milestones) == [150, 180, 210] and cfg.scheduler.gamma == 0.1
    assert (cfg.distill.kd.temperature, cfg.distill.kd.weight, cfg.distill.ce.weight) == (4.0, 0.9, 0.1)

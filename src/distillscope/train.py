"""Hydra entry point: build everything from config, fit, test with the best checkpoint, report.

    python -m distillscope.train experiment=digits_kd distill.kd.temperature=2

Returns the best value of `optimized_metric` so Hydra sweepers (and W&B agents) can optimise it.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from distillscope.cache import enable_batch_augmentation, setup_teacher_cache
from distillscope.distill.base import DistillLoss
from distillscope.errors import ConfigError, config_errors_as_one_line
from distillscope.explain import check_settings, explain_after_training
from distillscope.models import load_model_from_checkpoint
from distillscope.module import TEACHER_PREFIX, DistillationModule
from distillscope.report import evaluate, log_report, model_cost, student_row, teacher_row, write_report
from distillscope.runinfo import finish_run_record, write_run_record
from distillscope.runinfo import stamp as runinfo_stamp
from distillscope.validation import check_config, check_output_classes

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def build_losses(cfg: DictConfig) -> dict[str, DistillLoss]:
    return {name: instantiate(term) for name, term in cfg.distill.items() if term is not None}


def build_loggers(cfg: DictConfig, resuming: bool) -> list:
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if node is None:
            continue
        if resuming and node.get("_target_", "").endswith("CSVLogger"):
            # CSVLogger deletes an existing metrics.csv; a resumed run writes beside it instead.
            loggers.append(instantiate(node, version=f"resumed_{runinfo_stamp()}"))
        else:
            loggers.append(instantiate(node))
    return loggers


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list:
    callbacks = [instantiate(cb) for cb in (cfg.get("callbacks") or {}).values() if cb is not None]
    # LearningRateMonitor refuses to run without a logger; drop it for logger=none.
    return [cb for cb in callbacks if has_logger or not isinstance(cb, LearningRateMonitor)]


def resolve_ckpt_path(cfg: DictConfig, run_dir: Path) -> str | None:
    if cfg.ckpt_path != "last":
        return cfg.ckpt_path
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise ConfigError("ckpt_path", f"no {last} to resume from", "pass the interrupted run's directory as hydra.run.dir=<dir>")
    return str(last)


def build_module(cfg: DictConfig, datamodule) -> DistillationModule:
    """Student, teacher and loss terms from config, checked on one real batch before any training."""
    num_classes = int(cfg.data.num_classes)
    student = instantiate(cfg.student)
    teacher = instantiate(cfg.teacher) if cfg.get("teacher") else None
    losses = build_losses(cfg)
    # `module:` picks the LightningModule class (DistillationModule, or e.g. distillscope.mutual.MutualModule).
    module_factory = instantiate(cfg.module, _partial_=True) if cfg.get("module") else DistillationModule
    peers_as_teachers = getattr(getattr(module_factory, "func", module_factory), "peers_as_teachers", False)
    needy = [name for name, term in losses.items() if term.needs_teacher]
    if needy and teacher is None and not peers_as_teachers:
        raise ConfigError(
            f"distill.{needy[0]}", "needs a teacher but none is configured",
            "set teacher=checkpoint teacher.checkpoint=<file> (or teacher=timm teacher.name=<model>), or distill=none",
        )
    module = module_factory(
        student=student,
        losses=losses,
        num_classes=num_classes,
        teacher=teacher,
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        monitor=cfg.optimized_metric,
        student_config=OmegaConf.to_container(cfg.student, resolve=True),
        teacher_config=OmegaConf.to_container(cfg.teacher, resolve=True) if cfg.get("teacher") else None,
        channels_last=bool(cfg.speed.channels_last),
        compile_student=bool(cfg.speed.compile),
    )
    try:
        datamodule.setup("fit")
        outputs = module.prepare(datamodule.sample_batch(), num_train_samples=len(datamodule.train_set))
    except RuntimeError as exc:
        raise ConfigError("data.in_chans", f"a forward pass on one data batch failed ({str(exc).splitlines()[0]})", "make data.in_chans and the models' input channels agree") from exc
    check_output_classes(outputs.student_logits.shape[1], num_classes, "student")
    if teacher is not None:
        check_output_classes(outputs.teacher_logits.shape[1], num_classes, "teacher")
    return module


def keep_teacher_out_of_ddp(module: DistillationModule) -> None:
    """DDP wraps the whole LightningModule; leave the frozen teacher's weights and buffers out of its
    initial broadcast and per-step buffer sync (they never change, and can be large). Only the student and
    adapters are synchronised; the teacher has no gradients to all-reduce in any case."""
    if module.teacher is not None:
        names = [TEACHER_PREFIX + name for name in module.teacher.state_dict()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)


def leave_process_group() -> None:
    """Work across ranks ends with testing. What follows (report, explanations) is rank 0 alone, on whole
    splits; there torchmetrics must not try to sync with ranks that have already exited."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def build_report(cfg: DictConfig, module: DistillationModule, datamodule, test_metrics: dict, run_dir: Path, loggers: list) -> str:
    input_shape = tuple(datamodule.sample_batch(1)[0].shape[1:])
    repeats = int(cfg.report.latency_repeats)
    teacher, rows, notes = module.teacher, {}, []
    if teacher is not None:
        rows["teacher"] = {**teacher_row(test_metrics), **model_cost(teacher, input_shape, repeats)}
    baseline_path = cfg.report.get("baseline_checkpoint")
    if baseline_path and Path(baseline_path).is_file():
        baseline = load_model_from_checkpoint(baseline_path)
        scores = evaluate(baseline, teacher, datamodule.test_dataloader(), int(cfg.data.num_classes))
        rows["baseline student"] = {**scores, **model_cost(baseline, input_shape, repeats)}
        notes.append(f"baseline student: {baseline_path} (trained on labels only)")
    elif baseline_path:
        notes.append(f"no baseline at {baseline_path}: run `make baseline` to add the label-only student")
    name = "student (KD)" if teacher is not None else "model"
    rows[name] = {**student_row(test_metrics), **model_cost(module.student, input_shape, repeats)}
    notes.append("metrics on the test split with the best checkpoint by " + cfg.optimized_metric)
    notes.append("latency: median CPU forward time per image, eval mode, " + f"{torch.get_num_threads()} threads")
    table = write_report(run_dir, f"distillscope report: {cfg.task_name}", rows, notes)
    log_report(loggers, rows)
    return table


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test, report. Returns the final metrics (best optimized_metric included)."""
    check_config(cfg)
    if cfg.explain.enabled:
        check_settings(cfg.explain)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.data)
    enable_batch_augmentation(cfg, datamodule)  # before setup(): it takes crop/flip out of the per-sample transforms
    module = build_module(cfg, datamodule)
    keep_teacher_out_of_ddp(module)
    setup_teacher_cache(cfg, module, datamodule)
    ckpt_path = resolve_ckpt_path(cfg, run_dir)
    loggers = build_loggers(cfg, resuming=ckpt_path is not None)
    callbacks = build_callbacks(cfg, has_logger=bool(loggers))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    record = run_dir / ("run.json" if ckpt_path is None else f"run_resumed_{runinfo_stamp()}.json")
    if trainer.is_global_zero:
        write_run_record(record, cfg, PROJECT_ROOT)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        ckpt_cb = trainer.checkpoint_callback
        best_path = ckpt_cb.best_model_path if ckpt_cb else ""
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
            metrics[cfg.optimized_metric] = float(ckpt_cb.best_model_score)
        # Publish before testing so a crash later never loses the trained model.
        if cfg.get("export_checkpoint") and best_path and trainer.is_global_zero:
            Path(cfg.export_checkpoint).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(best_path, cfg.export_checkpoint)
            log.info("best checkpoint copied to %s", cfg.export_checkpoint)
        if cfg.test_after_fit:
            results = trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
            metrics.update({k: float(v) for k, v in results[0].items()})
        leave_process_group()
        if cfg.report.enabled and cfg.test_after_fit and trainer.is_global_zero:
            table = build_report(cfg, module, datamodule, metrics, run_dir, loggers)
            print(f"\n{table}\n\nrun directory: {run_dir}\n", flush=True)
            if cfg.explain.enabled:
                explain_after_training(cfg, module, datamodule, run_dir, loggers)
    except BaseException as exc:
        if trainer.is_global_zero:
            finish_run_record(record, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    if trainer.is_global_zero:
        finish_run_record(record, "finished", best_checkpoint=best_path, metrics=metrics)
    return metrics


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with config_errors_as_one_line():
        metrics = train(cfg)
    return metrics.get(cfg.optimized_metric)


# `make agent GPUS=0,1` passes per-machine overrides (trainer=ddp trainer.devices=2) to every trial this way:
# a W&B sweep fixes the trial's command line for all agents, while the GPUs belong to the machine.
AGENT_OVERRIDES_ENV = "DISTILLSCOPE_AGENT_OVERRIDES"


def agent_overrides() -> list[str]:
    # Popped: DDP re-launches this command for the other ranks with the (already extended) argv and our env.
    return shlex.split(os.environ.pop(AGENT_OVERRIDES_ENV, ""))


if __name__ == "__main__":
    sys.argv += agent_overrides()
    main()

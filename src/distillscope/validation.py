"""Checks that run before anything is built or trained; each failure is one ConfigError line."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from distillscope.errors import ConfigError
from distillscope.models.factory import check_model_name

MODEL_FACTORY = "distillscope.models.create_model"
CHECKPOINT_LOADER = "distillscope.models.load_model_from_checkpoint"


def check_model_node(node: DictConfig | None, key: str) -> None:
    if node is None:
        return
    target = node.get("_target_")
    if target == MODEL_FACTORY:
        check_model_name(str(node.name), f"{key}.name")
    checkpoint = node.get("checkpoint")
    if checkpoint and not Path(checkpoint).is_file():
        fix = "run `make teacher` first" if key == "teacher" else f"point {key}.checkpoint at an existing file"
        raise ConfigError(f"{key}.checkpoint", f"no file at {checkpoint}", fix)
    if target == CHECKPOINT_LOADER and not checkpoint:
        raise ConfigError(f"{key}.checkpoint", "is empty", f"set {key}.checkpoint=<path to a .ckpt>")


def check_distill_terms(terms: DictConfig) -> None:
    for name, term in terms.items():
        if term is None:
            continue
        if "_target_" not in term:
            raise ConfigError(f"distill.{name}", "has settings but no method", f"select it with distill={name} (or distill=[...,{name}])")
        weight = term.get("weight", 1.0)
        if weight is None or float(weight) < 0:
            raise ConfigError(f"distill.{name}.weight", f"must be >= 0, got {weight}", f"set distill.{name}.weight to 0 (off) or a positive value")
        if "temperature" in term and float(term.temperature) <= 0:
            raise ConfigError(f"distill.{name}.temperature", f"must be > 0, got {term.temperature}", "use e.g. 4 (Hinton KD) or 1")


def check_config(cfg: DictConfig) -> None:
    """Static checks on the composed config (no model is built yet)."""
    check_distill_terms(cfg.distill)
    check_model_node(cfg.get("student"), "student")
    check_model_node(cfg.get("teacher"), "teacher")
    if cfg.get("ckpt_path") not in (None, "last") and not Path(cfg.ckpt_path).is_file():
        raise ConfigError("ckpt_path", f"no file at {cfg.ckpt_path}", "use ckpt_path=last with the run's hydra.run.dir, or a real .ckpt path")


def check_output_classes(model_logits_dim: int, num_classes: int, key: str) -> None:
    if model_logits_dim != num_classes:
        raise ConfigError(
            key,
            f"predicts {model_logits_dim} classes but data.num_classes={num_classes}",
            "use a teacher/student trained for this dataset, or set data.num_classes to match",
        )

"""Born-again networks (Furlanello et al. 2018, "Born-Again Neural Networks", ICML).

Self-distillation over generations: a student of the teacher's own architecture is distilled from
it, then becomes the teacher of the next generation.

    python -m distillscope.born_again experiment=digits_born_again generations=3

Generation 0 is `teacher.checkpoint` (a model trained on labels); generation g trains in
<run dir>/gen<g> and is exported to `<born_again_dir>/gen<g>.ckpt`, the teacher of generation g+1.
The student's architecture is always rebuilt from the teacher checkpoint's own model config.
"""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from distillscope.errors import ConfigError, config_errors_as_one_line
from distillscope.models.factory import stored_model_config
from distillscope.train import agent_overrides, train

log = logging.getLogger(__name__)


def teacher_architecture(checkpoint: str) -> dict:
    """The model config a distillscope checkpoint was trained with (without its init checkpoint)."""
    model_cfg = stored_model_config(checkpoint)
    model_cfg["checkpoint"] = None  # each generation starts from scratch (BAN), only the teacher is trained
    return model_cfg


def generation_config(cfg: DictConfig, generation: int, teacher_checkpoint: str) -> DictConfig:
    run_dir = Path(cfg.paths.output_dir)
    gen_cfg = copy.deepcopy(cfg)
    with open_dict(gen_cfg):
        if "wandb" in (gen_cfg.get("logger") or {}):
            gen_cfg.logger.wandb.group = str(cfg.task_name)  # every generation in one W&B group
        gen_cfg.task_name = f"{cfg.task_name}_gen{generation}"
        gen_cfg.teacher.checkpoint = teacher_checkpoint
        gen_cfg.student = teacher_architecture(teacher_checkpoint)
        gen_cfg.paths.output_dir = str(run_dir / f"gen{generation}")
        gen_cfg.export_checkpoint = str(Path(cfg.born_again_dir) / f"gen{generation}.ckpt")
    return gen_cfg


def finish_wandb_run() -> None:
    """Each generation is its own W&B run: close the previous one before the next logger starts."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def run_generations(cfg: DictConfig) -> list[dict[str, float]]:
    """Train `generations` born-again generations; returns each generation's final metrics."""
    generations = cfg.get("generations")
    if generations is None or int(generations) < 1:
        raise ConfigError("generations", f"must be >= 1, got {generations}", "use experiment=digits_born_again generations=3 (or +generations=N)")
    if not cfg.get("teacher") or not cfg.teacher.get("checkpoint"):
        raise ConfigError("teacher.checkpoint", "born-again needs generation 0 as a trained checkpoint", "set teacher=checkpoint teacher.checkpoint=<file>")
    if not cfg.get("born_again_dir"):
        raise ConfigError("born_again_dir", "is not set", "set +born_again_dir=<folder for gen<g>.ckpt>")
    teacher_checkpoint, results = str(cfg.teacher.checkpoint), []
    for generation in range(1, int(generations) + 1):
        gen_cfg = generation_config(cfg, generation, teacher_checkpoint)
        log.info("born-again generation %d: teacher %s", generation, teacher_checkpoint)
        Path(gen_cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        results.append(train(gen_cfg))
        finish_wandb_run()
        teacher_checkpoint = str(gen_cfg.export_checkpoint)
        if not Path(teacher_checkpoint).is_file():
            raise RuntimeError(f"generation {generation} exported no checkpoint to {teacher_checkpoint}")
    for generation, metrics in enumerate(results, start=1):
        print(f"generation {generation}: test/acc {metrics.get('test/acc', float('nan')):.4f}", flush=True)
    return results


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with config_errors_as_one_line():
        results = run_generations(cfg)
    return results[-1].get(cfg.optimized_metric)


if __name__ == "__main__":
    sys.argv += agent_overrides()  # per-machine overrides from `make agent`, as train.py takes them
    main()

"""DDP on this CPU machine (gloo): the real CLI with two ranks gives one run, rank 0's outputs, whole-split metrics."""

from __future__ import annotations

import json

import torch
import torch.distributed as dist
from hydra.utils import instantiate
from torch.nn.parallel import DistributedDataParallel

from conftest import FAST, kd_overrides, run_cli
from distillscope.models import load_model_from_checkpoint
from distillscope.train import keep_teacher_out_of_ddp

# Two gloo ranks on CPU; validation and test run over the whole splits (no batch limits) so the synced
# metrics can be checked against the full test set.
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
WHOLE_SPLITS = [o for o in FAST if not o.startswith(("trainer.limit_val", "trainer.limit_test", "logger="))]


@torch.no_grad()
def full_test_set_scores(student, teacher, data_cfg: dict) -> tuple[float, float, int]:
    """Accuracy and mean KL(teacher || student) over every test sample, in one process, by hand."""
    datamodule = instantiate(data_cfg)
    datamodule.setup("test")
    student.eval(), teacher.eval()
    correct, kl_sum, n = 0, 0.0, 0
    for x, y, _ in datamodule.test_dataloader():
        log_ps, log_pt = student(x).log_softmax(1), teacher(x).log_softmax(1)
        correct += int((log_ps.argmax(1) == y).sum())
        kl_sum += float((log_pt.exp() * (log_pt - log_ps)).sum(1).sum())
        n += len(y)
    return correct / n, kl_sum / n, n


def test_ddp_cli_on_two_cpu_ranks(teacher_ckpt, tmp_path):
    run_dir = tmp_path / "run"
    # A baseline row makes rank 0 evaluate with torchmetrics after the other rank has exited.
    args = [*kd_overrides(teacher_ckpt, *WHOLE_SPLITS, *DDP), f"report.baseline_checkpoint={teacher_ckpt}",
            "explain.enabled=false", "logger=wandb", f"hydra.run.dir={run_dir}"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting with 2 processes" in result.stdout + result.stderr

    # One run directory (the second rank re-runs the command into the same hydra.run.dir), written once.
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert len(list(tmp_path.rglob("report.json"))) == 1
    assert len(list(tmp_path.rglob("run.json"))) == 1
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert result.stdout.count("| student (KD) |") == 1

    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["config"]["trainer"]["strategy"] == "ddp" and record["config"]["trainer"]["devices"] == 2
    models = json.loads((run_dir / "report.json").read_text())["models"]
    assert set(models) == {"teacher", "baseline student", "student (KD)"}
    report = models["student (KD)"]

    # The synced test metrics equal a single-process pass over the whole test set (not one rank's half).
    student = load_model_from_checkpoint(record["best_checkpoint"])
    teacher = load_model_from_checkpoint(str(teacher_ckpt))
    acc, kl, n = full_test_set_scores(student, teacher, record["config"]["data"])
    assert n > 100 and n % 2 == 0  # even, so DistributedSampler pads nothing: each sample counted once
    assert abs(report["test/acc"] - acc) < 1e-6
    assert abs(report["test/kl"] - kl) < 1e-4 * max(1.0, kl)
    assert abs(record["metrics"]["test/kl"] - kl) < 1e-4 * max(1.0, kl)


def test_teacher_stays_outside_ddp(teacher_ckpt, tmp_path):
    """DDP skips the frozen teacher entirely (no broadcast, no buffer sync); the student is synchronised."""
    from conftest import compose_cfg
    from distillscope.train import build_module

    cfg = compose_cfg(kd_overrides(teacher_ckpt, *FAST), tmp_path)
    module = build_module(cfg, instantiate(cfg.data))
    keep_teacher_out_of_ddp(module)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(module)
        ignored = ddp.parameters_to_ignore
        synced = {name for name, p in module.named_parameters() if name not in ignored}
    finally:
        dist.destroy_process_group()
    teacher_names = {f"teacher.{n}" for n in module.teacher.state_dict()}
    assert teacher_names and teacher_names <= set(ignored)
    assert synced == {name for name, p in module.named_parameters() if not name.startswith("teacher.")}
    assert any(name.startswith("student.") for name in synced)

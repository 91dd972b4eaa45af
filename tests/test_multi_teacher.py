"""Multi-teacher KD: the ensemble's combination rule by hand, frozen members, a real CLI run that
logs every teacher's metrics, a reloadable student checkpoint, and one-line config errors."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from conftest import cifar_overrides, run_cli, tiny_run
from distillscope.distill import KDLoss
from distillscope.distill.base import DistillOutputs
from distillscope.errors import ConfigError
from distillscope.models import load_model_from_checkpoint
from distillscope.models.ensemble import EnsembleTeacher
from distillscope.module import freeze

TIMM_MEMBER = {"_target_": "distillscope.models.create_model", "name": "cifar_resnet8", "num_classes": 3, "in_chans": 1}
Z1 = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
Z2 = [[0.0, 3.0, 1.0], [-1.0, 0.0, 4.0]]


def softmax(row, t=1.0):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def ensemble(mode: str, temperature: float = 4.0) -> EnsembleTeacher:
    return EnsembleTeacher([TIMM_MEMBER, TIMM_MEMBER], mode=mode, temperature=temperature)


@pytest.mark.parametrize("mode", ["mean", "confidence"])
def test_combined_soft_targets_are_the_weighted_average(mode):
    t = 4.0
    combined = ensemble(mode, t).combine(torch.tensor([Z1, Z2], dtype=torch.float64))
    for row, (a, b) in enumerate(zip(Z1, Z2)):
        if mode == "mean":
            w1 = w2 = 0.5
        else:  # weight proportional to each teacher's top-1 probability at T=1
            c1, c2 = max(softmax(a)), max(softmax(b))
            w1, w2 = c1 / (c1 + c2), c2 / (c1 + c2)
        expected = [w1 * p + w2 * q for p, q in zip(softmax(a, t), softmax(b, t))]
        got = torch.softmax(combined[row] / t, dim=0).tolist()
        assert got == pytest.approx(expected, rel=1e-9)


def test_kd_from_the_ensemble_matches_kl_to_averaged_targets():
    t = 4.0
    student = torch.tensor([[1.0, -1.0, 0.0], [0.0, 2.0, 1.0]], dtype=torch.float64)
    teacher = ensemble("mean", t).combine(torch.tensor([Z1, Z2], dtype=torch.float64))
    loss = KDLoss(temperature=t)(DistillOutputs(student_logits=student, teacher_logits=teacher, targets=torch.tensor([0, 1])))
    expected = 0.0
    for s, a, b in zip(student.tolist(), Z1, Z2):
        target = [(p + q) / 2 for p, q in zip(softmax(a, t), softmax(b, t))]
        expected += sum(p * math.log(p / q) for p, q in zip(target, softmax(s, t))) / 2
    assert loss.item() == pytest.approx(expected * t * t, rel=1e-9)


def test_gradients_reach_student_never_the_frozen_members():
    teacher = freeze(ensemble("confidence"))
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    x = torch.randn(4, 1, 8, 8)
    loss = KDLoss()(DistillOutputs(student_logits=student(x), teacher_logits=teacher(x), targets=torch.zeros(4, dtype=torch.long)))
    loss.backward()
    assert student[1].weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"mode": "vote"}, "teacher.mode"), ({"teachers": []}, "teacher.teachers"),
     ({"teachers": [{**TIMM_MEMBER, "name": "resnet_99"}]}, "teacher.teachers.0.name")],
)
def test_bad_ensemble_config_is_one_config_error(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        EnsembleTeacher(**{"teachers": [TIMM_MEMBER], **kwargs})


def test_multi_teacher_cli_logs_every_teacher_and_checkpoint_reloads(teacher_ckpt, tmp_path):
    """Two teachers of different architectures (trained ResNet-8 checkpoint, timm ResNet-14)."""
    run_dir = tmp_path / "run"
    result = run_cli(
        ["experiment=digits_multi_teacher", "teacher.mode=confidence", "report.baseline_checkpoint=null",
         f"teacher.teachers=[{{_target_:distillscope.models.load_model_from_checkpoint,checkpoint:'{teacher_ckpt}'}},"
         "{_target_:distillscope.models.create_model,name:cifar_resnet14,num_classes:10,in_chans:1}]",
         "logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
         "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false", "report.latency_repeats=1",
         f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(next(run_dir.rglob("metrics.csv"))) as fh:
        rows = list(csv.DictReader(fh))
    logged = {k for row in rows for k, v in row.items() if v}
    for stage in ("val", "test"):
        for i in (0, 1):
            for kind in ("acc", "agreement", "weight"):
                assert f"{stage}/teacher{i}_{kind}" in logged
    weights = [float(r["val/teacher0_weight"]) + float(r["val/teacher1_weight"]) for r in rows if r.get("val/teacher0_weight")]
    assert weights and all(w == pytest.approx(1.0, abs=1e-5) for w in weights)

    ckpt = next((run_dir / "checkpoints").glob("epoch_*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert not any(k.startswith("teacher.") for k in state)  # the ensemble stays out of checkpoints
    student = load_model_from_checkpoint(str(ckpt))
    assert student(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_ensemble_teacher_on_cifar_shaped_data(fake_cifar100, tmp_path):
    member = "{_target_:distillscope.models.create_model,name:cifar_resnet8,num_classes:100,in_chans:3}"
    metrics, _ = tiny_run(tmp_path, *cifar_overrides(
        fake_cifar100, "teacher=ensemble", f"teacher.teachers=[{member},{member}]", "distill=kd", "data.batch_size=16",
    ))
    assert {"test/teacher0_acc", "test/teacher1_agreement", "test/agreement"} <= set(metrics)

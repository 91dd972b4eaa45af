"""Logit-based distillation terms: each loss against the paper's formula written out here by hand
(plain Python math on small fixed tensors), gradients, and real runs from the CLI."""

from __future__ import annotations

import csv
import math
import statistics

import pytest
import torch
from torch import nn

from conftest import cifar_overrides, kd_overrides, run_cli, tiny_run
from distillscope.distill import (
    DISTLoss,
    DKDLoss,
    HardLabelLoss,
    KDLoss,
    LSKDLoss,
    MSELogitsLoss,
    RankingLoss,
)
from distillscope.distill.base import DistillOutputs
from distillscope.module import freeze

STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 1.0, 0.0], [1.0, 0.0, 2.5]]
TARGETS = [1, 2]
METHODS = {
    "hard_label": HardLabelLoss,
    "dkd": DKDLoss,
    "dist": DISTLoss,
    "lskd": LSKDLoss,
    "ranking": RankingLoss,
    "mse_logits": MSELogitsLoss,
}


def outputs(student=STUDENT, teacher=TEACHER, targets=TARGETS) -> DistillOutputs:
    return DistillOutputs(
        student_logits=torch.tensor(student, dtype=torch.float64),
        teacher_logits=torch.tensor(teacher, dtype=torch.float64),
        targets=torch.tensor(targets),
    )


def softmax(row, t=1.0):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def test_hard_label_is_cross_entropy_on_teacher_argmax():
    # teacher argmax: class 0 for row 0, class 2 for row 1
    expected = (-math.log(softmax(STUDENT[0])[0]) - math.log(softmax(STUDENT[1])[2])) / 2
    assert HardLabelLoss()(outputs()).item() == pytest.approx(expected, rel=1e-9)


def dkd_parts(s, t, y, temp):
    """TCKD and NCKD for one sample, from Zhao et al. 2022 eqs. (1)-(3)."""
    ps, pt = softmax(s, temp), softmax(t, temp)
    tckd = kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
    others = [i for i in range(len(s)) if i != y]
    qs = softmax([s[i] for i in others], temp)
    qt = softmax([t[i] for i in others], temp)
    return tckd, kl(qt, qs), pt[y]


def test_dkd_matches_decoupled_formula():
    temp, alpha, beta = 4.0, 1.0, 8.0
    parts = [dkd_parts(s, t, y, temp) for s, t, y in zip(STUDENT, TEACHER, TARGETS)]
    expected = temp**2 * sum(alpha * tc + beta * nc for tc, nc, _ in parts) / len(parts)
    loss = DKDLoss(alpha=alpha, beta=beta, temperature=temp)(outputs())
    assert loss.item() == pytest.approx(expected, rel=1e-9)


def test_dkd_recovers_kd_with_the_papers_coupling():
    # Zhao et al. eq. (4): KD = TCKD + (1 - p_t^target) * NCKD; one sample so beta is a scalar.
    s, t, y, temp = STUDENT[1], TEACHER[1], TARGETS[1], 2.0
    _, _, pt_target = dkd_parts(s, t, y, temp)
    single = outputs([s], [t], [y])
    dkd = DKDLoss(alpha=1.0, beta=1.0 - pt_target, temperature=temp)(single)
    assert dkd.item() == pytest.approx(KDLoss(temperature=temp)(single).item(), rel=1e-9)


def test_dkd_warms_up_over_twenty_epochs():
    term = DKDLoss()
    assert term.current_weight(0) == pytest.approx(1 / 20)
    assert term.current_weight(9) == pytest.approx(0.5)
    assert term.current_weight(19) == term.current_weight(50) == 1.0


def test_dist_matches_pearson_relations():
    temp, beta, gamma = 4.0, 2.0, 3.0
    ps = [softmax(r, temp) for r in STUDENT]
    pt = [softmax(r, temp) for r in TEACHER]
    inter = 1 - statistics.mean(statistics.correlation(a, b) for a, b in zip(ps, pt))
    cols_s, cols_t = list(zip(*ps)), list(zip(*pt))
    intra = 1 - statistics.mean(statistics.correlation(a, b) for a, b in zip(cols_s, cols_t))
    expected = temp**2 * (beta * inter + gamma * intra)
    loss = DISTLoss(beta=beta, gamma=gamma, temperature=temp)(outputs())
    # rel 1e-4: the reference keeps an eps=1e-8 in the denominator; these columns have small spread.
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_lskd_is_kd_on_z_scored_logits():
    temp = 2.0

    def z(row):
        return [(v - statistics.mean(row)) / statistics.stdev(row) for v in row]

    expected = temp**2 * statistics.mean(
        kl(softmax(z(t), temp), softmax(z(s), temp)) for s, t in zip(STUDENT, TEACHER)
    )
    assert LSKDLoss(temperature=temp)(outputs()).item() == pytest.approx(expected, rel=1e-6)


def test_lskd_ignores_logit_scale_and_shift():
    scaled = [[3 * v + 7 for v in row] for row in TEACHER]
    term = LSKDLoss()
    assert term(outputs(teacher=scaled)).item() == pytest.approx(term(outputs()).item(), rel=1e-6)


def test_ranking_is_plackett_luce_nll_of_teacher_order():
    def nll(s, order):
        rest, total = list(order), 0.0
        for cls in order:
            total -= s[cls] - math.log(sum(math.exp(s[j]) for j in rest))
            rest.remove(cls)
        return total

    # teacher orders: row 0 -> 0,1,2; row 1 -> 2,0,1
    expected = (nll(STUDENT[0], [0, 1, 2]) + nll(STUDENT[1], [2, 0, 1])) / 2
    assert RankingLoss(top_k=3)(outputs()).item() == pytest.approx(expected, rel=1e-9)


def test_ranking_top1_is_hard_label_and_ignores_teacher_scale():
    top1 = RankingLoss(top_k=1)(outputs()).item()
    assert top1 == pytest.approx(HardLabelLoss()(outputs()).item(), rel=1e-9)
    squashed = [[0.01 * v for v in row] for row in TEACHER]
    assert RankingLoss(top_k=3)(outputs(teacher=squashed)).item() == pytest.approx(
        RankingLoss(top_k=3)(outputs()).item(), rel=1e-9
    )


def test_mse_logits_by_hand():
    diffs = [(s - t) ** 2 for rs, rt in zip(STUDENT, TEACHER) for s, t in zip(rs, rt)]
    assert MSELogitsLoss()(outputs()).item() == pytest.approx(sum(diffs) / len(diffs), rel=1e-9)


@pytest.mark.parametrize("name", METHODS)
def test_gradients_reach_student_never_frozen_teacher(name):
    torch.manual_seed(0)
    student, teacher = nn.Linear(6, 5), freeze(nn.Linear(6, 5))
    x, y = torch.randn(8, 6), torch.randint(0, 5, (8,))
    loss = METHODS[name]()(DistillOutputs(student_logits=student(x), teacher_logits=teacher(x), targets=y))
    loss.backward()
    assert torch.isfinite(loss)
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def read_metric_columns(run_dir):
    with open(next(run_dir.rglob("metrics.csv"))) as fh:
        return set(csv.DictReader(fh).fieldnames)


def test_all_logit_methods_combine_from_the_cli(teacher_ckpt, tmp_path):
    """One real CLI run with every method at once: each term is logged under its own name."""
    methods = ",".join(METHODS)
    run_dir = tmp_path / "run"
    result = run_cli(
        [*kd_overrides(teacher_ckpt, f"distill=[{methods}]"), "explain.enabled=false", "logger=csv", "trainer.max_epochs=1",
         "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
         "trainer.enable_progress_bar=false", "report.latency_repeats=1", f"hydra.run.dir={run_dir}",
         f"paths.artifacts_dir={tmp_path}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    columns = read_metric_columns(run_dir)
    for name in ["ce", *METHODS]:
        assert f"train/loss_{name}" in columns


def cifar_run(data_dir, root, methods: list[str]) -> dict:
    overrides = cifar_overrides(
        data_dir, "teacher=timm", "teacher.name=cifar_resnet8", "student=cifar_resnet8",
        f"distill=[{','.join(methods)}]", "data.batch_size=16",
    )
    metrics, _ = tiny_run(root, *overrides)
    for name in methods:
        assert math.isfinite(metrics[f"train/loss_{name}"])
    assert 0.0 <= metrics["test/acc"] <= 1.0
    return metrics


def test_all_logit_methods_train_on_cifar_shaped_data(fake_cifar100, tmp_path):
    cifar_run(fake_cifar100, tmp_path, list(METHODS))


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_each_method_trains_on_cifar_shaped_data(name, fake_cifar100, tmp_path):
    cifar_run(fake_cifar100, tmp_path, [name])


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_each_method_trains_on_digits(name, teacher_ckpt, tmp_path):
    metrics, _ = tiny_run(tmp_path, *kd_overrides(teacher_ckpt, f"distill={name}", "explain.enabled=false"))
    assert math.isfinite(metrics[f"train/loss_{name}"])
    assert "test/agreement" in metrics

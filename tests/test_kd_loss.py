"""KD loss math against hand-computed values."""

import math

import pytest
import torch

from distillscope.distill import CELoss, DistillOutputs, KDLoss


def softmax(xs):
    exps = [math.exp(v) for v in xs]
    return [e / sum(exps) for e in exps]


def hand_kl(teacher, student):
    return sum(p * math.log(p / q) for p, q in zip(teacher, student))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_matches_hand_formula_with_t_squared(temperature):
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 1.0, 0.0], [0.5, 0.5, 2.0]]
    expected = sum(
        hand_kl(softmax([v / temperature for v in tr]), softmax([v / temperature for v in sr]))
        for sr, tr in zip(s, t)
    ) / len(s) * temperature**2
    out = DistillOutputs(student_logits=torch.tensor(s), targets=torch.tensor([1, 2]), teacher_logits=torch.tensor(t))
    assert KDLoss(temperature=temperature)(out).item() == pytest.approx(expected, rel=1e-5)


def test_kd_is_zero_when_student_equals_teacher():
    logits = torch.randn(4, 5)
    out = DistillOutputs(student_logits=logits, targets=torch.zeros(4, dtype=torch.long), teacher_logits=logits.clone())
    assert KDLoss(temperature=3.0)(out).item() == pytest.approx(0.0, abs=1e-6)


def test_ce_matches_hand_formula():
    s = [[1.0, 2.0, 0.5]]
    out = DistillOutputs(student_logits=torch.tensor(s), targets=torch.tensor([1]))
    assert CELoss()(out).item() == pytest.approx(-math.log(softmax(s[0])[1]), rel=1e-6)


def test_warmup_scales_weight_linearly():
    term = KDLoss(weight=1.0, warmup_epochs=4)
    assert [term.current_weight(e) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_invalid_hyperparameters_are_rejected():
    with pytest.raises(ValueError):
        KDLoss(temperature=0)
    with pytest.raises(ValueError):
        KDLoss(weight=-1)

"""Logit-standardised KD (Sun et al. 2024, "Logit Standardization in Knowledge Distillation", CVPR).

Each logit vector is z-scored (minus its mean, over its standard deviation) before the usual
softened KL, so the student has to match the teacher's logit relations, not their range.
The paper's CIFAR recipe: base temperature 2, KD weight 9, CE weight 0.1.
"""

from dataclasses import replace

from torch import Tensor

from distillscope.distill.base import DistillOutputs
from distillscope.distill.kd import KDLoss


def standardize(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score each row (unbiased std, as the reference code)."""
    return (logits - logits.mean(dim=1, keepdim=True)) / (logits.std(dim=1, keepdim=True) + eps)


class LSKDLoss(KDLoss):
    def __init__(self, weight: float = 9.0, temperature: float = 2.0, warmup_epochs: int = 0):
        super().__init__(weight, temperature, warmup_epochs)

    def forward(self, outputs: DistillOutputs) -> Tensor:
        standardized = replace(
            outputs,
            student_logits=standardize(outputs.student_logits),
            teacher_logits=standardize(outputs.teacher_logits),
        )
        return super().forward(standardized)

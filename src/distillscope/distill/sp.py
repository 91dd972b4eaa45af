"""Tung & Mori 2019, "Similarity-Preserving Knowledge Distillation" (ICCV 2019).

Batch Gram matrix of flattened activations, each row L2-normalised; the loss is the squared Frobenius
distance between student and teacher matrices divided by b^2, summed over tapped layers (beta=3000).
Only the b x b matrices are compared, so any shapes pair up without adapters.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from distillscope.distill.adapters import FeatureLoss
from distillscope.distill.base import DistillOutputs


def similarity(feat: Tensor) -> Tensor:
    flat = feat.flatten(1)
    return nn.functional.normalize(flat @ flat.t(), dim=1)


class SPLoss(FeatureLoss):
    config_name = "sp"

    def __init__(
        self,
        student_taps: Sequence[str | int] = (-1,),
        teacher_taps: Sequence[str | int] = (-1,),
        weight: float = 3000.0,
        warmup_epochs: int = 0,
    ):
        super().__init__(student_taps, teacher_taps, weight, warmup_epochs)

    def forward(self, outputs: DistillOutputs) -> Tensor:
        total = outputs.student_logits.new_zeros(())
        for s, t in self.feature_pairs(outputs):
            b = s.shape[0]
            total = total + (similarity(s) - similarity(t)).pow(2).sum() / (b * b)
        return total

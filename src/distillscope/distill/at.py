"""Zagoruyko & Komodakis 2017, "Paying More Attention to Attention" (ICLR 2017).

Spatial attention map of a layer: mean over channels of |f|^p, flattened and L2-normalised per sample.
The loss is the mean squared difference of student and teacher maps, summed over tapped layers
(RepDistiller's form, beta=1000, p=2). Channel counts may differ; spatial sizes are pooled to the smaller.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from distillscope.distill.adapters import FeatureLoss, pool_to_common
from distillscope.distill.base import DistillOutputs


class ATLoss(FeatureLoss):
    config_name = "at"
    feature_ndims = (4,)

    def __init__(
        self,
        student_taps: Sequence[str | int] = (1, 2, 3),
        teacher_taps: Sequence[str | int] = (1, 2, 3),
        weight: float = 1000.0,
        p: float = 2.0,
        warmup_epochs: int = 0,
    ):
        super().__init__(student_taps, teacher_taps, weight, warmup_epochs)
        if p <= 0:
            raise ValueError(f"p must be > 0, got {p}")
        self.p = float(p)

    def attention(self, feat: Tensor) -> Tensor:
        return nn.functional.normalize(feat.abs().pow(self.p).mean(dim=1).flatten(1), dim=1)

    def forward(self, outputs: DistillOutputs) -> Tensor:
        total = outputs.student_logits.new_zeros(())
        for s, t in self.feature_pairs(outputs):
            s, t = pool_to_common(s, t)
            total = total + (self.attention(s) - self.attention(t)).pow(2).mean()
        return total

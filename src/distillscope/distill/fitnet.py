"""Romero et al. 2015, "FitNets: Hints for Thin Deep Nets" (ICLR 2015).

The student's guided layer, passed through a trainable regressor, regresses the teacher's hint layer:
mean squared error. Trained jointly with the task loss, as in RepDistiller/mdistiller (the paper's
separate hint pre-training stage is not reproduced).
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from distillscope.distill.adapters import FeatureLoss, aligned_shapes, pool_to_common, projection
from distillscope.distill.base import DistillOutputs


class FitNetLoss(FeatureLoss):
    config_name = "fitnet"

    def __init__(
        self,
        student_taps: Sequence[str | int] = (2,),
        teacher_taps: Sequence[str | int] = (2,),
        weight: float = 100.0,
        warmup_epochs: int = 0,
    ):
        super().__init__(student_taps, teacher_taps, weight, warmup_epochs)
        self.regressors = nn.ModuleList()

    def setup(self, outputs: DistillOutputs) -> None:
        super().setup(outputs)
        # Conv 1x1 + BN (RepDistiller's ConvReg without its ReLU, so pre-activation hints fit too).
        self.regressors = nn.ModuleList(
            projection(s[1], t[1], len(s))
            for s, t in (aligned_shapes(*pair) for pair in self.feature_pairs(outputs))
        )

    def forward(self, outputs: DistillOutputs) -> Tensor:
        total = outputs.student_logits.new_zeros(())
        for regressor, (s, t) in zip(self.regressors, self.feature_pairs(outputs)):
            s, t = pool_to_common(s, t)
            total = total + nn.functional.mse_loss(regressor(s), t)
        return total

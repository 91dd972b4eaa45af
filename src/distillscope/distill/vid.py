"""Ahn et al. 2019, "Variational Information Distillation for Knowledge Transfer" (CVPR 2019).

Maximises a variational lower bound on the mutual information between teacher and student layers:
the teacher activation is modelled as a Gaussian whose mean a small regressor predicts from the student
activation and whose per-channel variance is learned (softplus). The loss is the negative
log-likelihood (up to a constant), averaged over elements and summed over tapped layers; defaults from
RepDistiller (beta=1, initial variance 5, layers = the three stage outputs).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from distillscope.distill.adapters import FeatureLoss, aligned_shapes, pool_to_common
from distillscope.distill.base import DistillOutputs


class GaussianRegressor(nn.Module):
    """Student features -> mean of the teacher features (1x1 convs), plus a per-channel variance."""

    def __init__(self, in_channels: int, out_channels: int, ndim: int, init_variance: float, eps: float):
        super().__init__()
        layer = (lambda i, o: nn.Conv2d(i, o, 1)) if ndim == 4 else nn.Linear
        self.mean = nn.Sequential(
            layer(in_channels, out_channels), nn.ReLU(),
            layer(out_channels, out_channels), nn.ReLU(),
            layer(out_channels, out_channels),
        )
        # softplus(raw) + eps == init_variance at the start.
        self.raw_variance = nn.Parameter(torch.full((out_channels,), math.log(math.expm1(init_variance - eps))))
        self.eps = eps

    def variance(self, ndim: int) -> Tensor:
        var = nn.functional.softplus(self.raw_variance) + self.eps
        return var.view(1, -1, *([1] * (ndim - 2)))


def gaussian_nll(mean: Tensor, variance: Tensor, target: Tensor) -> Tensor:
    """Mean over elements of 0.5 * ((target - mean)^2 / var + log var): -log N(target; mean, var) - const."""
    return 0.5 * ((target - mean).pow(2) / variance + variance.log()).mean()


class VIDLoss(FeatureLoss):
    config_name = "vid"

    def __init__(
        self,
        student_taps: Sequence[str | int] = (1, 2, 3),
        teacher_taps: Sequence[str | int] = (1, 2, 3),
        weight: float = 1.0,
        init_variance: float = 5.0,
        eps: float = 1e-5,
        warmup_epochs: int = 0,
    ):
        super().__init__(student_taps, teacher_taps, weight, warmup_epochs)
        if init_variance <= eps:
            raise ValueError(f"init_variance must be > eps ({eps}), got {init_variance}")
        self.init_variance, self.eps = float(init_variance), float(eps)
        self.regressors = nn.ModuleList()

    def setup(self, outputs: DistillOutputs) -> None:
        super().setup(outputs)
        self.regressors = nn.ModuleList(
            GaussianRegressor(s[1], t[1], len(s), self.init_variance, self.eps)
            for s, t in (aligned_shapes(*pair) for pair in self.feature_pairs(outputs))
        )

    def forward(self, outputs: DistillOutputs) -> Tensor:
        total = outputs.student_logits.new_zeros(())
        for regressor, (s, t) in zip(self.regressors, self.feature_pairs(outputs)):
            s, t = pool_to_common(s, t)
            total = total + gaussian_nll(regressor.mean(s), regressor.variance(t.dim()), t)
        return total

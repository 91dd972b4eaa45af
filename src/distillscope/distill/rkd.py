"""Park et al. 2019, "Relational Knowledge Distillation" (CVPR 2019).

Distance term: pairwise Euclidean distances of embeddings, each divided by its mean over distinct pairs;
angle term: cosines of the angles formed by every triplet. Both compared with the Huber (smooth L1)
loss; weights 25 (distance) and 50 (angle) from the paper. Feature maps are pooled to embeddings.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from distillscope.distill.adapters import FeatureLoss, pooled
from distillscope.distill.base import DistillOutputs


def normalised_distances(emb: Tensor, eps: float) -> Tensor:
    sq = emb.pow(2).sum(dim=1)
    dist = (sq[:, None] + sq[None, :] - 2 * emb @ emb.t()).clamp(min=eps).sqrt()
    dist = dist * (1 - torch.eye(len(emb), device=emb.device, dtype=emb.dtype))  # exact zero diagonal
    return dist / dist[dist > 0].mean()


def triplet_angles(emb: Tensor) -> Tensor:
    """cos of angle(e_i - e_j, e_k - e_j) for all (i, j, k), flattened."""
    diffs = nn.functional.normalize(emb[None, :, :] - emb[:, None, :], dim=2)  # [j, i] = e_i - e_j
    return torch.bmm(diffs, diffs.transpose(1, 2)).flatten()


class RKDLoss(FeatureLoss):
    config_name = "rkd"

    def __init__(
        self,
        student_taps: Sequence[str | int] = (-1,),
        teacher_taps: Sequence[str | int] = (-1,),
        weight: float = 1.0,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        eps: float = 1e-12,
        warmup_epochs: int = 0,
    ):
        super().__init__(student_taps, teacher_taps, weight, warmup_epochs)
        if distance_weight < 0 or angle_weight < 0:
            raise ValueError("distance_weight and angle_weight must be >= 0")
        self.distance_weight, self.angle_weight, self.eps = float(distance_weight), float(angle_weight), float(eps)

    def forward(self, outputs: DistillOutputs) -> Tensor:
        total = outputs.student_logits.new_zeros(())
        huber = nn.functional.smooth_l1_loss
        for s, t in self.feature_pairs(outputs):
            s, t = pooled(s), pooled(t)
            if self.distance_weight:
                with torch.no_grad():
                    target = normalised_distances(t, self.eps)
                total = total + self.distance_weight * huber(normalised_distances(s, self.eps), target)
            if self.angle_weight:
                with torch.no_grad():
                    target = triplet_angles(t)
                total = total + self.angle_weight * huber(triplet_angles(s), target)
        return total

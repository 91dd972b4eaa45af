"""Passalis & Tefas 2018, "Learning Deep Representations with Probabilistic Knowledge Transfer" (ECCV 2018).

Cosine similarities between the samples of a batch, shifted to [0, 1] and normalised per row into
conditional probabilities; the loss is KL(teacher || student) over those distributions, averaged over
all pairs (RepDistiller's form, beta=30000). Feature maps are pooled to embeddings, so dimensions may differ.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from distillscope.distill.adapters import FeatureLoss, pooled
from distillscope.distill.base import DistillOutputs


def cosine_affinity(feat: Tensor, eps: float) -> Tensor:
    """Row-normalised (cos + 1) / 2 between every pair of samples: P(j | i)."""
    z = nn.functional.normalize(pooled(feat), dim=1)
    sim = (z @ z.t() + 1.0) / 2.0
    return sim / (sim.sum(dim=1, keepdim=True) + eps)


class PKTLoss(FeatureLoss):
    config_name = "pkt"

    def __init__(
        self,
        student_taps: Sequence[str | int] = (-1,),
        teacher_taps: Sequence[str | int] = (-1,),
        weight: float = 30000.0,
        eps: float = 1e-7,
        warmup_epochs: int = 0,
    ):
        super().__init__(student_taps, teacher_taps, weight, warmup_epochs)
        self.eps = float(eps)

    def forward(self, outputs: DistillOutputs) -> Tensor:
        total = outputs.student_logits.new_zeros(())
        for s, t in self.feature_pairs(outputs):
            p_s, p_t = cosine_affinity(s, self.eps), cosine_affinity(t, self.eps)
            total = total + (p_t * ((p_t + self.eps) / (p_s + self.eps)).log()).mean()
        return total

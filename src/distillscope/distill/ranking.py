"""Ranking distillation: the student keeps the teacher's ordering of its top-k classes.

Loss: the Plackett-Luce negative log-likelihood of the teacher's top-k ranking under the student's
logits (ListMLE, Xia et al. 2008, ICML; top-k listwise distillation as in RankDistil, Reddi et al.
2021, AISTATS). Position r costs logsumexp(s over classes not yet placed) - s[class ranked r], so
only the order of the teacher's scores matters, never their scale.
"""

import torch
from torch import Tensor

from distillscope.distill.base import DistillLoss, DistillOutputs, positive_temperature


class RankingLoss(DistillLoss):
    def __init__(self, weight: float = 1.0, top_k: int = 5, temperature: float = 1.0, warmup_epochs: int = 0):
        super().__init__(weight, warmup_epochs)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k, self.temperature = int(top_k), positive_temperature(temperature)

    def forward(self, outputs: DistillOutputs) -> Tensor:
        scores = outputs.student_logits / self.temperature
        k = min(self.top_k, scores.shape[1])
        # Student scores in the teacher's full order; the tail beyond k only enters the denominators.
        order = torch.argsort(outputs.teacher_logits, dim=1, descending=True)
        ranked = scores.gather(1, order)
        # logsumexp over positions r..C for every r, by a reversed cumulative logsumexp.
        tail_lse = torch.logcumsumexp(ranked.flip(1), dim=1).flip(1)
        return (tail_lse[:, :k] - ranked[:, :k]).sum(dim=1).mean()

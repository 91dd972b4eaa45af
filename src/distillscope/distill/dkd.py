"""Decoupled Knowledge Distillation (Zhao et al. 2022, CVPR).

KD splits into a target-class term (TCKD: KL between the binary target/non-target
probabilities) and a non-target term (NCKD: KL between the distributions over the other
classes, renormalised without the target). DKD weights them independently: alpha * TCKD +
beta * NCKD, both scaled by T^2, so NCKD is no longer suppressed when the teacher is confident.
"""

import torch
from torch import Tensor

from distillscope.distill.base import DistillLoss, DistillOutputs, positive_temperature


def binary_target_probs(probs: Tensor, target_mask: Tensor) -> Tensor:
    """(p_target, 1 - p_target) per sample, from full class probabilities."""
    p_target = (probs * target_mask).sum(dim=1, keepdim=True)
    return torch.cat([p_target, 1.0 - p_target], dim=1)


def non_target_log_probs(logits: Tensor, target_mask: Tensor, temperature: float) -> Tensor:
    """Log-softmax over the non-target classes only (the target gets probability 0)."""
    masked = (logits / temperature).masked_fill(target_mask, float("-inf"))
    return torch.log_softmax(masked, dim=1)


class DKDLoss(DistillLoss):
    def __init__(
        self,
        weight: float = 1.0,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup_epochs: int = 20,
    ):
        super().__init__(weight, warmup_epochs)
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), positive_temperature(temperature)

    def forward(self, outputs: DistillOutputs) -> Tensor:
        s, t, t2 = outputs.student_logits, outputs.teacher_logits, self.temperature**2
        target_mask = torch.zeros_like(s, dtype=torch.bool).scatter_(1, outputs.targets.unsqueeze(1), True)
        eps = torch.finfo(s.dtype).tiny  # log(0) guard when the student is certain
        b_student = binary_target_probs(torch.softmax(s / self.temperature, dim=1), target_mask)
        b_teacher = binary_target_probs(torch.softmax(t / self.temperature, dim=1), target_mask)
        tckd = (b_teacher * (torch.log(b_teacher + eps) - torch.log(b_student + eps))).sum(dim=1).mean()

        log_q_student = non_target_log_probs(s, target_mask, self.temperature)
        log_q_teacher = non_target_log_probs(t, target_mask, self.temperature)
        # 0 * (-inf) at the masked target would give NaN; that entry contributes nothing.
        nckd_terms = log_q_teacher.exp() * (log_q_teacher - log_q_student)
        nckd = nckd_terms.masked_fill(target_mask, 0.0).sum(dim=1).mean()
        return t2 * (self.alpha * tckd + self.beta * nckd)

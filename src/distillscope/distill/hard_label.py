"""Hard-label distillation (Touvron et al. 2021, DeiT, ICML): cross-entropy on the teacher's argmax.

The student treats the teacher's top-1 prediction as a second label; no temperature, no soft targets.
"""

import torch
from torch import Tensor, nn

from distillscope.distill.base import DistillLoss, DistillOutputs


class HardLabelLoss(DistillLoss):
    def __init__(self, weight: float = 0.5, label_smoothing: float = 0.0, warmup_epochs: int = 0):
        super().__init__(weight, warmup_epochs)
        self.label_smoothing = float(label_smoothing)

    def forward(self, outputs: DistillOutputs) -> Tensor:
        teacher_labels = torch.argmax(outputs.teacher_logits, dim=1)
        return nn.functional.cross_entropy(
            outputs.student_logits, teacher_labels, label_smoothing=self.label_smoothing
        )

"""Cross-entropy on the ground-truth labels (the 'hard' term every recipe keeps)."""

from torch import Tensor, nn

from distillscope.distill.base import DistillLoss, DistillOutputs


class CELoss(DistillLoss):
    needs_teacher = False

    def __init__(self, weight: float = 1.0, label_smoothing: float = 0.0, warmup_epochs: int = 0):
        super().__init__(weight, warmup_epochs)
        self.label_smoothing = label_smoothing

    def forward(self, outputs: DistillOutputs) -> Tensor:
        return nn.functional.cross_entropy(
            outputs.student_logits, outputs.targets, label_smoothing=self.label_smoothing
        )

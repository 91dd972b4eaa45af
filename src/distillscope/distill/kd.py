"""Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".

T^2 * KL(softmax(t/T) || softmax(s/T)): the T^2 keeps gradient magnitudes comparable across T.
"""

from torch import Tensor

from distillscope.distill.base import DistillLoss, DistillOutputs, kl_soft_targets, positive_temperature


class KDLoss(DistillLoss):
    def __init__(self, weight: float = 0.9, temperature: float = 4.0, warmup_epochs: int = 0):
        super().__init__(weight, warmup_epochs)
        self.temperature = positive_temperature(temperature)

    def forward(self, outputs: DistillOutputs) -> Tensor:
        t = self.temperature
        return kl_soft_targets(outputs.student_logits, outputs.teacher_logits, t) * t * t

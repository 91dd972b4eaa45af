"""DIST (Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher", NeurIPS).

Instead of matching probabilities exactly (KL), the student matches their relations:
inter-class = 1 - Pearson correlation between student and teacher probabilities of each sample
(across classes); intra-class = the same for each class across the batch. A stronger teacher's
sharper outputs then need not be reproduced in scale, only in ordering and shape.
"""

from torch import Tensor

from distillscope.distill.base import DistillLoss, DistillOutputs, positive_temperature


def mean_pearson_distance(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean over rows of 1 - Pearson correlation between rows of `a` and `b`."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    corr = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)
    return 1.0 - corr.mean()


class DISTLoss(DistillLoss):
    def __init__(
        self,
        weight: float = 1.0,
        beta: float = 2.0,
        gamma: float = 2.0,
        temperature: float = 4.0,
        warmup_epochs: int = 0,
    ):
        super().__init__(weight, warmup_epochs)
        self.beta, self.gamma, self.temperature = float(beta), float(gamma), positive_temperature(temperature)

    def forward(self, outputs: DistillOutputs) -> Tensor:
        t = self.temperature
        p_student = (outputs.student_logits / t).softmax(dim=1)
        p_teacher = (outputs.teacher_logits / t).softmax(dim=1)
        inter = mean_pearson_distance(p_student, p_teacher)
        intra = mean_pearson_distance(p_student.T, p_teacher.T)
        return t * t * (self.beta * inter + self.gamma * intra)

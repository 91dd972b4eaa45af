"""Logit regression: mean squared error between student and teacher logits.

Ba & Caruana 2014 ("Do Deep Nets Really Need to be Deep?", NeurIPS) trained students on the
teacher's logits with L2; Kim et al. 2021 (IJCAI) show it is the T -> infinity limit of KD and
often beats KL. Averaged over batch and classes.
"""

from torch import Tensor, nn

from distillscope.distill.base import DistillLoss, DistillOutputs


class MSELogitsLoss(DistillLoss):
    def forward(self, outputs: DistillOutputs) -> Tensor:
        return nn.functional.mse_loss(outputs.student_logits, outputs.teacher_logits)

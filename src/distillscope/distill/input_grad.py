"""Srinivas & Fleuret 2018, "Knowledge Transfer with Jacobian Matching" (ICML 2018).

Matches the input gradients (saliency maps) of student and teacher: for each sample, the gradient of the
ground-truth class score with respect to the input, L2-normalised; the loss is the batch mean of the
squared distance between the normalised gradients. The student's gradient must itself be differentiated
(double backpropagation), so each step costs one extra student forward, a second backward through it,
and one extra teacher forward and backward: roughly 3x the compute of plain KD.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distillscope.distill.base import DistillLoss, DistillOutputs


def input_gradient(model: nn.Module, inputs: Tensor, targets: Tensor, create_graph: bool) -> Tensor:
    """d(score of class y_i)/d(x_i) for each sample, flattened to (B, D)."""
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        score = model(x).gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(score, x, create_graph=create_graph)
    return grad.flatten(1)


class InputGradLoss(DistillLoss):
    def forward(self, outputs: DistillOutputs) -> Tensor:
        if outputs.student is None or outputs.teacher is None or outputs.inputs is None:
            raise ValueError("input-gradient matching needs the student, the teacher and the inputs in DistillOutputs")
        # The student is run again in train mode; its batch-norm statistics see this batch twice.
        g_student = input_gradient(outputs.student, outputs.inputs, outputs.targets, create_graph=True)
        g_teacher = input_gradient(outputs.teacher, outputs.inputs, outputs.targets, create_graph=False)
        diff = nn.functional.normalize(g_student, dim=1) - nn.functional.normalize(g_teacher, dim=1)
        return diff.pow(2).sum(dim=1).mean()

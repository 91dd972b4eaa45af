"""Teacher-student fidelity metrics, all torchmetrics so they accumulate on device and sync under DDP.

Names are public API (sweeps and dashboards read them): `<stage>/acc`, `<stage>/f1`, `<stage>/ece`,
`<stage>/agreement`, `<stage>/kl`, and `<stage>/teacher_{acc,f1,ece}`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import KLDivergence, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError, MulticlassF1Score

ECE_BINS = 15


def label_metrics(num_classes: int) -> MetricCollection:
    """Accuracy, macro F1 and 15-bin ECE of one model against the labels."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "ece": MulticlassCalibrationError(num_classes, n_bins=ECE_BINS, norm="l1"),
        }
    )


class FidelityMetrics(nn.Module):
    """Everything one stage reports: student vs labels, teacher vs labels, student vs teacher."""

    def __init__(self, num_classes: int, stage: str, with_teacher: bool):
        super().__init__()
        self.stage = stage
        self.student = label_metrics(num_classes).clone(prefix=f"{stage}/")
        self.with_teacher = with_teacher
        if with_teacher:
            self.teacher = label_metrics(num_classes).clone(prefix=f"{stage}/teacher_")
            # Top-1 agreement is accuracy of the student against the teacher's argmax.
            self.agreement = MulticlassAccuracy(num_classes, average="micro")
            self.kl = KLDivergence(log_prob=True, reduction="mean")  # KL(teacher || student), T=1

    def update(self, student_logits: Tensor, targets: Tensor, teacher_logits: Tensor | None) -> None:
        student_logits = student_logits.float()
        self.student.update(student_logits, targets)
        if self.with_teacher and teacher_logits is not None:
            teacher_logits = teacher_logits.float()
            self.teacher.update(teacher_logits, targets)
            self.agreement.update(student_logits, teacher_logits.argmax(dim=1))
            self.kl.update(torch.log_softmax(teacher_logits, 1), torch.log_softmax(student_logits, 1))

    def metric_objects(self) -> dict[str, object]:
        """Name -> torchmetrics object, for `LightningModule.log_dict` (Lightning computes and resets)."""
        objs: dict[str, object] = dict(self.student.items(keep_base=False, copy_state=False))
        if self.with_teacher:
            objs.update(self.teacher.items(keep_base=False, copy_state=False))
            objs[f"{self.stage}/agreement"] = self.agreement
            objs[f"{self.stage}/kl"] = self.kl
        return objs

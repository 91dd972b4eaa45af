"""Teacher-student fidelity metrics, all torchmetrics so they accumulate on device and sync under DDP.

Names are public API (sweeps and dashboards read them): `<stage>/acc`, `<stage>/f1`, `<stage>/ece`,
`<stage>/agreement`, `<stage>/kl`, and `<stage>/teacher_{acc,f1,ece}`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import KLDivergence, MetricCollection
from torchmetrics.utilities import dim_zero_cat
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

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


class DetailMetrics(nn.Module):
    """What the report draws for one model: confusion matrix, per-class table, reliability diagram bins."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.per_class = MetricCollection(
            {
                "precision": MulticlassPrecision(num_classes, average=None),
                "recall": MulticlassRecall(num_classes, average=None),
                "f1": MulticlassF1Score(num_classes, average=None),
            }
        )
        # The ECE metric keeps every prediction's confidence and correctness: the reliability bins come from it.
        self.calibration = MulticlassCalibrationError(num_classes, n_bins=ECE_BINS, norm="l1")

    def update(self, logits: Tensor, targets: Tensor) -> None:
        logits = logits.float()
        self.confusion.update(logits, targets)
        self.per_class.update(logits, targets)
        self.calibration.update(logits, targets)

    def compute(self) -> dict:
        confusion = self.confusion.compute()
        per_class = {k: v.tolist() for k, v in self.per_class.compute().items()}
        per_class["support"] = confusion.sum(1).tolist()  # true-class counts, as scikit-learn reports
        return {
            "confusion_matrix": confusion.tolist(),
            "per_class": per_class,
            "ece": float(self.calibration.compute()),
            "reliability": reliability_bins(
                dim_zero_cat(self.calibration.confidences), dim_zero_cat(self.calibration.accuracies), ECE_BINS
            ),
        }


def reliability_bins(confidences: Tensor, correct: Tensor, n_bins: int = ECE_BINS) -> dict[str, list[float]]:
    """Per equal-width confidence bin: mean confidence, accuracy and share of samples (empty bins: NaN)."""
    edges = torch.linspace(0, 1, n_bins + 1, device=confidences.device)
    # Same bin convention as torchmetrics' ECE: bin i holds confidences in (edges[i], edges[i+1]].
    index = (torch.bucketize(confidences, edges[1:-1], right=False)).clamp(0, n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).float()
    conf = torch.zeros(n_bins, device=confidences.device).index_add_(0, index, confidences.float()) / count
    acc = torch.zeros(n_bins, device=confidences.device).index_add_(0, index, correct.float()) / count
    return {"edges": edges.tolist(), "confidence": conf.tolist(), "accuracy": acc.tolist(),
            "share": (count / count.sum()).tolist()}


def classification_report(per_class: dict[str, list[float]], class_names: list[str] | None = None) -> str:
    """scikit-learn-style per-class precision/recall/F1/support table, as markdown."""
    names = class_names or [str(i) for i in range(len(per_class["support"]))]
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for i, name in enumerate(names):
        lines.append(f"| {name} | {per_class['precision'][i]:.3f} | {per_class['recall'][i]:.3f} | "
                     f"{per_class['f1'][i]:.3f} | {int(per_class['support'][i])} |")
    return "\n".join(lines)

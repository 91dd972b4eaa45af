"""The common interface between the LightningModule and every distillation method.

The module computes one `DistillOutputs` per batch and asks each term for a scalar. A term never
sees the module itself, so new methods are new files, not edits to `module.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class DistillOutputs:
    """Everything a loss term may read for one batch."""

    student_logits: Tensor
    targets: Tensor
    teacher_logits: Tensor | None = None
    # Activations captured by forward hooks, keyed by the module path that was tapped.
    student_feats: dict[str, Tensor] = field(default_factory=dict)
    teacher_feats: dict[str, Tensor] = field(default_factory=dict)
    inputs: Tensor | None = None
    index: Tensor | None = None  # dataset index of each sample (memory banks, teacher caches)
    # The networks, for methods that need extra passes (input-gradient matching).
    student: nn.Module | None = None
    teacher: nn.Module | None = None
    epoch: int = 0
    num_train_samples: int | None = None  # size of the training set (memory banks keyed by index)


class DistillLoss(nn.Module):
    """One weighted term of the training loss.

    Subclasses implement `forward(outputs) -> scalar` (unweighted); the module multiplies by
    `current_weight(epoch)`. Class attributes tell the module what to prepare:
      needs_teacher: the term reads teacher outputs (False for plain cross-entropy).
      student_taps / teacher_taps: module paths (or timm feature indices) to hook.
    Terms with trainable adapters build them in `setup()` from a dry forward pass; those
    parameters are optimised with the student and saved in its checkpoint.
    """

    needs_teacher: bool = True

    def __init__(self, weight: float = 1.0, warmup_epochs: int = 0):
        super().__init__()
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        self.weight = float(weight)
        self.warmup_epochs = int(warmup_epochs)
        self.student_taps: list[str] = []
        self.teacher_taps: list[str] = []

    def current_weight(self, epoch: int) -> float:
        """Linear warm-up from 1/warmup to the full weight over `warmup_epochs` epochs."""
        if self.warmup_epochs <= 0:
            return self.weight
        return self.weight * min(1.0, (epoch + 1) / self.warmup_epochs)

    def setup(self, outputs: DistillOutputs) -> None:
        """Called once with real outputs before training; build shape-dependent adapters here."""

    def forward(self, outputs: DistillOutputs) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def positive_temperature(temperature: float) -> float:
    """Validated softmax temperature (train.py names the config key before any term is built)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return float(temperature)


def kl_soft_targets(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Batch-mean KL(softmax(t/T) || softmax(s/T)), not yet multiplied by T^2."""
    log_p_student = torch.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = torch.log_softmax(teacher_logits / temperature, dim=1)
    return nn.functional.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)

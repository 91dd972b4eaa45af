"""Distillation methods: one file and one `DistillLoss` subclass per method."""

from distillscope.distill.base import DistillLoss, DistillOutputs, kl_soft_targets
from distillscope.distill.ce import CELoss
from distillscope.distill.kd import KDLoss

__all__ = ["CELoss", "DistillLoss", "DistillOutputs", "KDLoss", "kl_soft_targets"]

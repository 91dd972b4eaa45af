"""What feature-based methods share: paired taps, shape alignment, and trainable adapters.

A feature term names its taps in its config (`student_taps`, `teacher_taps`, paired in order). Adapters
are built in `setup()` from the shapes of a dry forward pass, so they fit any student/teacher pair; being
submodules of the loss they are optimised with the student and saved in its checkpoint.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from distillscope.distill.base import DistillLoss, DistillOutputs
from distillscope.errors import ConfigError


class FeatureLoss(DistillLoss):
    """A term that compares student and teacher activations at paired taps.

    `config_name` is the method's `conf/distill/<name>.yaml`; it names the keys in error messages.
    `max_pairs` limits how many tap pairs a method can use (None: any number, summed);
    `feature_ndims` are the activation ranks it can compare (vectors and/or feature maps).
    """

    config_name: str = ""
    max_pairs: int | None = None
    feature_ndims: tuple[int, ...] = (2, 4)

    def __init__(
        self,
        student_taps: Sequence[str | int],
        teacher_taps: Sequence[str | int],
        weight: float = 1.0,
        warmup_epochs: int = 0,
    ):
        super().__init__(weight, warmup_epochs)
        student_taps, teacher_taps = tap_list(student_taps), tap_list(teacher_taps)
        if not student_taps:
            raise ConfigError(self.key("student_taps"), "is empty", "give at least one module path or stage index, e.g. [-1]")
        if len(student_taps) != len(teacher_taps):
            raise ConfigError(
                self.key("teacher_taps"),
                f"has {len(teacher_taps)} entries but student_taps has {len(student_taps)}",
                "give one teacher tap per student tap (they are paired in order)",
            )
        if self.max_pairs is not None and len(student_taps) > self.max_pairs:
            raise ConfigError(self.key("student_taps"), f"has {len(student_taps)} entries, this method uses {self.max_pairs}", "tap one layer, e.g. [-1]")
        self.student_taps, self.teacher_taps = student_taps, teacher_taps

    def key(self, name: str) -> str:
        return f"distill.{self.config_name}.{name}"

    def feature_pairs(self, outputs: DistillOutputs) -> list[tuple[Tensor, Tensor]]:
        return [(outputs.student_feats[s], outputs.teacher_feats[t]) for s, t in zip(self.student_taps, self.teacher_taps)]

    def setup(self, outputs: DistillOutputs) -> None:
        """Reject taps whose outputs this method cannot compare (before training starts)."""
        for side, taps, feats in (("student_taps", self.student_taps, outputs.student_feats),
                                  ("teacher_taps", self.teacher_taps, outputs.teacher_feats)):
            for tap in taps:
                feat = feats[tap]
                if not isinstance(feat, Tensor) or feat.dim() not in self.feature_ndims:
                    shape = tuple(feat.shape) if isinstance(feat, Tensor) else type(feat).__name__
                    wanted = " or ".join({2: "(B, C)", 4: "(B, C, H, W)"}[d] for d in self.feature_ndims)
                    raise ConfigError(self.key(side), f"tap '{tap}' gives {shape}, this method needs {wanted}", "tap a stage output, e.g. -1")


def tap_list(taps: Sequence[str | int] | str | int) -> list[str]:
    """Tap specs as strings (the keys of DistillOutputs' feature dicts); a single tap may be given bare."""
    return [str(taps)] if isinstance(taps, (str, int)) else [str(t) for t in taps]


def pooled(feat: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C) by global average pooling (the penultimate embedding); (B, C) unchanged."""
    return feat.mean(dim=(2, 3)) if feat.dim() == 4 else feat.flatten(1)


def pool_to_common(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger feature map to the smaller one's size (RepDistiller's rule).

    A map paired with a vector is pooled to a vector; two vectors pass through.
    """
    if student.dim() != teacher.dim():
        return pooled(student), pooled(teacher)
    if student.dim() != 4 or student.shape[-2:] == teacher.shape[-2:]:
        return student, teacher
    size = (min(student.shape[-2], teacher.shape[-2]), min(student.shape[-1], teacher.shape[-1]))
    pool = nn.functional.adaptive_avg_pool2d
    return pool(student, size), pool(teacher, size)


def aligned_shapes(student: Tensor, teacher: Tensor) -> tuple[torch.Size, torch.Size]:
    """Shapes after `pool_to_common`: what an adapter sees, computed on the dry-run features."""
    s, t = pool_to_common(student, teacher)
    return s.shape, t.shape


def projection(in_channels: int, out_channels: int, ndim: int, norm: bool = True) -> nn.Module:
    """Channel adapter: 1x1 convolution for feature maps, linear layer for vectors (+ batch norm)."""
    if ndim == 4:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
    else:
        layers = [nn.Linear(in_channels, out_channels, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm1d(out_channels))
    return nn.Sequential(*layers)

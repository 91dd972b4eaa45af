"""Yang et al. 2022, "Masked Generative Distillation" (ECCV 2022).

Random channels of the (aligned) student feature map are zeroed; a small generator (3x3 conv, ReLU,
3x3 conv) must reconstruct the teacher's full feature map from what is left. The loss is the summed
squared error divided by the batch size. Defaults are the authors' ImageNet classification settings
(yzd-v/MGD cls: channel masking, mask ratio lambda=0.15, alpha=7e-5 as the term weight, last stage).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from distillscope.distill.adapters import FeatureLoss, aligned_shapes, pool_to_common
from distillscope.distill.base import DistillOutputs


class MGDLoss(FeatureLoss):
    config_name = "mgd"
    feature_ndims = (4,)

    def __init__(
        self,
        student_taps: Sequence[str | int] = (-1,),
        teacher_taps: Sequence[str | int] = (-1,),
        weight: float = 7e-5,
        mask_ratio: float = 0.15,
        warmup_epochs: int = 0,
    ):
        super().__init__(student_taps, teacher_taps, weight, warmup_epochs)
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.mask_ratio = float(mask_ratio)
        self.aligners = nn.ModuleList()
        self.generators = nn.ModuleList()

    def setup(self, outputs: DistillOutputs) -> None:
        super().setup(outputs)
        shapes = [aligned_shapes(*pair) for pair in self.feature_pairs(outputs)]
        # 1x1 conv only where channel counts differ, as in the reference implementation.
        self.aligners = nn.ModuleList(
            nn.Conv2d(s[1], t[1], 1) if s[1] != t[1] else nn.Identity() for s, t in shapes
        )
        self.generators = nn.ModuleList(
            nn.Sequential(nn.Conv2d(t[1], t[1], 3, padding=1), nn.ReLU(), nn.Conv2d(t[1], t[1], 3, padding=1))
            for _, t in shapes
        )

    def channel_mask(self, feat: Tensor) -> Tensor:
        """1 keeps a channel, 0 drops it; each channel of each sample dropped with p = mask_ratio."""
        draw = torch.rand(feat.shape[0], feat.shape[1], 1, 1, device=feat.device)
        return (draw >= self.mask_ratio).to(feat.dtype)

    def forward(self, outputs: DistillOutputs) -> Tensor:
        total = outputs.student_logits.new_zeros(())
        for align, generate, (s, t) in zip(self.aligners, self.generators, self.feature_pairs(outputs)):
            s, t = pool_to_common(s, t)
            s = align(s)
            total = total + (generate(s * self.channel_mask(s)) - t).pow(2).sum() / s.shape[0]
        return total

"""Replayable random crop + flip, applied to whole batches on the device.

Every random choice is a hash of (seed, sample index, draw), so the pass that fills the teacher cache and
the training loop apply the same transform to the same sample (the FKD recipe: Shen & Xing 2022, "A Fast
Knowledge Distillation Framework for Visual Recognition", arXiv:2112.01528). Which draw a sample gets in
an epoch is itself a hash of (seed, epoch, index): `num_draws` draws per sample when a cache holds them,
a fresh one every epoch otherwise. Integer hashing keeps it vectorised, on any device, with no host sync
and no shared RNG state between data workers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_PRIME = 2_147_483_647  # 2^31 - 1: a product of two values below 2^31 still fits in int64
_SALT_DRAW, _SALT_TOP, _SALT_LEFT, _SALT_FLIP = 1, 2, 3, 4


def mix(*values: Tensor | int) -> Tensor:
    """Deterministic hash of int tensors/ints (broadcast together) into [0, 2^31 - 1)."""
    device = next((v.device for v in values if isinstance(v, Tensor)), None)
    h = torch.tensor(0x1234567, dtype=torch.int64, device=device)
    for value in values:
        h = (h * 48271 + torch.as_tensor(value, device=device).long() % _PRIME) % _PRIME
        for _ in range(2):  # multiply-xorshift rounds spread neighbouring inputs apart
            h = (h * 48271) % _PRIME
            h = h ^ (h >> 13)
    return h


class ReplayAugmentation:
    """RandomCrop(size, padding, padding_mode='reflect') and RandomHorizontalFlip, replayable per draw.

    Reflect padding, cropping and flipping only move pixels, so they commute with per-channel
    normalisation: applying them to normalised batches equals the per-sample torchvision pipeline.
    """

    def __init__(self, padding: int = 0, hflip: bool = False, seed: int = 0, num_draws: int | None = None):
        if num_draws is not None and num_draws < 1:
            raise ValueError(f"num_draws must be >= 1, got {num_draws}")
        self.padding, self.hflip, self.seed = int(padding), bool(hflip), int(seed)
        # Without randomness every draw is the identity: one draw is all a cache needs.
        self.num_draws = 1 if not self.random else num_draws

    @property
    def random(self) -> bool:
        return self.padding > 0 or self.hflip

    def settings(self) -> dict:
        return {"padding": self.padding, "hflip": self.hflip, "seed": self.seed, "num_draws": self.num_draws}

    def draws(self, index: Tensor, epoch: int) -> Tensor:
        """The draw each sample uses in `epoch`: one of `num_draws`, or unbounded (fresh each epoch)."""
        h = mix(self.seed, _SALT_DRAW, epoch, index)
        return h % self.num_draws if self.num_draws is not None else h

    def params(self, index: Tensor, draw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(top, left, flip) of the crop window in the padded image, per sample."""
        span = 2 * self.padding + 1
        top = mix(self.seed, _SALT_TOP, index, draw) % span
        left = mix(self.seed, _SALT_LEFT, index, draw) % span
        flip = (mix(self.seed, _SALT_FLIP, index, draw) % 2).bool() & self.hflip
        return top, left, flip

    def apply(self, x: Tensor, index: Tensor, draw: Tensor) -> Tensor:
        """Augment a batch (B, C, H, W): sample i gets the transform of (index[i], draw[i])."""
        if not self.random:
            return x
        batch, _, height, width = x.shape
        top, left, flip = (p.to(x.device) for p in self.params(index, draw))
        if self.padding:
            x = F.pad(x, (self.padding,) * 4, mode="reflect")
        rows = top[:, None] + torch.arange(height, device=x.device)
        cols = left[:, None] + torch.arange(width, device=x.device)
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        picked = x[torch.arange(batch, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
        # (B, H, W, C) -> (B, C, H, W) in the standard layout: the memory format stays speed.channels_last's call.
        return picked.permute(0, 3, 1, 2).contiguous()

    def __call__(self, x: Tensor, index: Tensor, epoch: int) -> Tensor:
        return self.apply(x, index, self.draws(index, epoch))

"""Tian et al. 2020, "Contrastive Representation Distillation" (ICLR 2020).

Student and teacher embeddings (linear heads + L2 norm on the pooled last stage) are contrasted with
NCE: the other network's embedding of the same sample is the positive, K embeddings of other samples
held in a memory bank keyed by dataset index are the negatives. The critic exp(<u, v> / tau) is
normalised by a constant Z fixed on the first batch; memory rows are updated with momentum after each
step. Both directions (student vs teacher bank, teacher vs student bank) are summed. Defaults from
RepDistiller (beta=0.8, 128-d embeddings, K=16384, tau=0.07, momentum 0.5); K is capped at the number
of other training samples.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from distillscope.distill.adapters import FeatureLoss, pooled
from distillscope.distill.base import DistillOutputs
from distillscope.errors import ConfigError


def nce_loss(scores: Tensor, num_data: int, eps: float = 1e-7) -> Tensor:
    """NCE with uniform noise P_n = 1/N: column 0 holds the positive, the other K columns the negatives."""
    k = scores.shape[1] - 1
    noise = k / num_data  # K * P_n
    log_pos = (scores[:, 0] / (scores[:, 0] + noise + eps)).log()
    log_neg = (noise / (scores[:, 1:] + noise + eps)).log()
    return -(log_pos.sum() + log_neg.sum()) / scores.shape[0]


class CRDLoss(FeatureLoss):
    config_name = "crd"
    max_pairs = 1

    def __init__(
        self,
        student_taps: Sequence[str | int] = (-1,),
        teacher_taps: Sequence[str | int] = (-1,),
        weight: float = 0.8,
        feat_dim: int = 128,
        num_negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        warmup_epochs: int = 0,
    ):
        super().__init__(student_taps, teacher_taps, weight, warmup_epochs)
        if num_negatives < 1:
            raise ConfigError(self.key("num_negatives"), f"must be >= 1, got {num_negatives}", "use e.g. 16384 (CIFAR) or 4096")
        if temperature <= 0:
            raise ConfigError(self.key("temperature"), f"must be > 0, got {temperature}", "use 0.07 (the paper's value)")
        if not 0 <= momentum < 1:
            raise ConfigError(self.key("momentum"), f"must be in [0, 1), got {momentum}", "use 0.5 (the paper's value)")
        self.feat_dim, self.num_negatives = int(feat_dim), int(num_negatives)
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.num_data = 0

    def setup(self, outputs: DistillOutputs) -> None:
        super().setup(outputs)
        if not outputs.num_train_samples or outputs.num_train_samples < 2:
            raise ValueError("CRD needs the training-set size (outputs.num_train_samples) for its memory bank")
        self.num_data = int(outputs.num_train_samples)
        self.num_negatives = min(self.num_negatives, self.num_data - 1)
        (s, t), = self.feature_pairs(outputs)
        self.embed_student = nn.Linear(pooled(s).shape[1], self.feat_dim)
        self.embed_teacher = nn.Linear(pooled(t).shape[1], self.feat_dim)
        # Uniform init with the spread of RepDistiller's ContrastMemory; persistent so resuming keeps them.
        bound = 1.0 / math.sqrt(self.feat_dim / 3)
        for name in ("memory_student", "memory_teacher"):
            self.register_buffer(name, torch.rand(self.num_data, self.feat_dim).mul_(2 * bound).sub_(bound))
        # Normalising constants, fixed on the first training batch (<= 0 means not yet set).
        self.register_buffer("z_student", torch.tensor(-1.0))
        self.register_buffer("z_teacher", torch.tensor(-1.0))

    def sample_contrast(self, index: Tensor) -> Tensor:
        """(B, K+1) dataset indices: the sample itself, then K uniform draws among the other samples."""
        negatives = torch.randint(0, self.num_data - 1, (len(index), self.num_negatives), device=index.device)
        negatives += (negatives >= index[:, None]).long()  # skip the positive: draws cover the other N-1
        return torch.cat([index[:, None], negatives], dim=1)

    def scores(self, memory: Tensor, contrast: Tensor, embedding: Tensor, z: Tensor) -> Tensor:
        """exp(<memory row, embedding> / tau) / Z for every contrast index; sets Z on first use."""
        logits = torch.bmm(memory[contrast], embedding[:, :, None]).squeeze(2) / self.temperature
        out = logits.exp()
        if z <= 0:
            z.fill_(out.detach().mean() * self.num_data)
        return out / z

    def forward(self, outputs: DistillOutputs) -> Tensor:
        (s, t), = self.feature_pairs(outputs)
        index = outputs.index
        if index is None or index.min() < 0 or index.max() >= self.num_data:
            raise ValueError(f"CRD needs training-set indices in [0, {self.num_data}); got {index}")
        v_s = nn.functional.normalize(self.embed_student(pooled(s)), dim=1)
        v_t = nn.functional.normalize(self.embed_teacher(pooled(t)), dim=1)
        contrast = self.sample_contrast(index)
        # Each embedding is scored against the other network's bank (the banks carry no gradient).
        loss = nce_loss(self.scores(self.memory_teacher, contrast, v_s, self.z_student), self.num_data) + nce_loss(
            self.scores(self.memory_student, contrast, v_t, self.z_teacher), self.num_data
        )
        with torch.no_grad():
            for memory, v in ((self.memory_student, v_s), (self.memory_teacher, v_t)):
                updated = memory[index] * self.momentum + v.detach() * (1 - self.momentum)
                memory.index_copy_(0, index, nn.functional.normalize(updated, dim=1))
        return loss

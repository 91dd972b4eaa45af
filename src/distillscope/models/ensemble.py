"""Multi-teacher distillation: several frozen teachers (any architectures) behind one teacher module.

`EnsembleTeacher` returns logits whose softmax at `temperature` is exactly the (per-sample weighted)
average of the members' soft targets at that temperature, so every logit-based term distils from
the ensemble unchanged. `TeacherAgreement` logs how each member relates to the labels and the student.
"""

from __future__ import annotations

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from distillscope.errors import ConfigError
from distillscope.models.taps import FeatureTaps
from distillscope.validation import check_model_node

MODES = ("mean", "confidence")


class EnsembleTeacher(nn.Module):
    """Members built from a list of teacher configs (`_target_` each); their soft targets combined.

    mode=mean: equal weights. mode=confidence: per sample, each member's weight is proportional to
    its top-1 probability (at T=1), so teachers that are sure about a sample dominate it.
    """

    def __init__(self, teachers: ListConfig | list, mode: str = "mean", temperature: float = 4.0):
        super().__init__()
        if mode not in MODES:
            raise ConfigError("teacher.mode", f"unknown mode '{mode}'", f"use one of: {', '.join(MODES)}")
        if not teachers:
            raise ConfigError("teacher.teachers", "is empty", "list at least one teacher config (each with a _target_)")
        if temperature <= 0:
            raise ConfigError("teacher.temperature", f"must be > 0, got {temperature}", "use the KD term's temperature, e.g. 4")
        members = []
        for i, node in enumerate(teachers):
            node = node if isinstance(node, DictConfig) else DictConfig(node)
            check_model_node(node, f"teacher.teachers.{i}")
            members.append(instantiate(node))
        self.members = nn.ModuleList(members)
        self.mode = mode
        self.temperature = float(temperature)

    def member_weights(self, member_logits: Tensor) -> Tensor:
        """(members, batch) weights summing to 1 over members for every sample."""
        n_members, batch = member_logits.shape[:2]
        if self.mode == "mean":
            return member_logits.new_full((n_members, batch), 1.0 / n_members)
        confidence = member_logits.softmax(dim=2).amax(dim=2)
        return confidence / confidence.sum(dim=0, keepdim=True)

    def combine(self, member_logits: Tensor) -> Tensor:
        """(members, batch, classes) -> (batch, classes) logits: T * log(sum_i w_i softmax(z_i / T))."""
        t = self.temperature
        log_probs = torch.log_softmax(member_logits / t, dim=2)
        log_weights = self.member_weights(member_logits).log().unsqueeze(2)
        return t * torch.logsumexp(log_weights + log_probs, dim=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.combine(torch.stack([member(x) for member in self.members]))


class TeacherAgreement(L.Callback):
    """Per member i, on val and test: `<stage>/teacher<i>_acc` (vs labels), `<stage>/teacher<i>_agreement`
    (student top-1 vs member top-1) and, with mode=confidence, `<stage>/teacher<i>_weight` (mean weight)."""

    def __init__(self) -> None:
        self.taps: FeatureTaps | None = None
        self.metrics: dict[str, MulticlassAccuracy] = {}
        self.weights: dict[str, list[Tensor]] = {}

    @staticmethod
    def ensemble(pl_module: L.LightningModule) -> EnsembleTeacher | None:
        teacher = getattr(pl_module, "teacher", None)
        return teacher if isinstance(teacher, EnsembleTeacher) else None

    def _start(self, pl_module: L.LightningModule) -> None:
        ensemble = self.ensemble(pl_module)
        if ensemble is None:
            return
        n, num_classes = len(ensemble.members), int(pl_module.hparams.num_classes)
        self.taps = FeatureTaps(pl_module, ["student", *(f"teacher.members.{i}" for i in range(n))], "callbacks.teacher_agreement")
        self.metrics = {
            f"teacher{i}_{kind}": MulticlassAccuracy(num_classes, average="micro").to(pl_module.device)
            for i in range(n) for kind in ("acc", "agreement")
        }
        self.weights = {f"teacher{i}_weight": [] for i in range(n)} if ensemble.mode == "confidence" else {}

    def _batch(self, pl_module: L.LightningModule, batch) -> None:
        if self.taps is None:
            return
        feats = self.taps.pop()
        student_logits = feats.pop("student")
        member_logits = torch.stack([feats[f"teacher.members.{i}"] for i in range(len(feats))])
        targets = batch[1]
        for i, logits in enumerate(member_logits):
            self.metrics[f"teacher{i}_acc"].update(logits, targets)
            self.metrics[f"teacher{i}_agreement"].update(student_logits, logits.argmax(dim=1))
        if self.weights:
            weights = self.ensemble(pl_module).member_weights(member_logits)
            for i, w in enumerate(weights):
                self.weights[f"teacher{i}_weight"].append(w)

    def _end(self, pl_module: L.LightningModule, stage: str) -> None:
        if self.taps is None:
            return
        self.taps.remove()
        self.taps = None
        for name, metric in self.metrics.items():
            pl_module.log(f"{stage}/{name}", metric.compute())
            metric.reset()
        for name, values in self.weights.items():
            pl_module.log(f"{stage}/{name}", torch.cat(values).mean(), sync_dist=True)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch(pl_module, batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._end(pl_module, "val")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch(pl_module, batch)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._end(pl_module, "test")

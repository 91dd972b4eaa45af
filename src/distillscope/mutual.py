"""Online distillation: deep mutual learning (Zhang et al. 2018, "Deep Mutual Learning", CVPR).

A cohort (the student plus named peers, any architectures) trains together from scratch. Each model
k minimises the label terms plus, for every teacher-reading term (kd, dkd, dist, ...), the mean of
that term against each other model's detached predictions:

    L_k = CE(z_k, y) + 1/(K-1) * sum_{j != k} term(z_k, stopgrad(z_j))

Summing L_k over the cohort and taking one optimizer step updates every model by its own loss (the
models share no parameters). The student keeps the public metric names (`val/acc`, `train/loss_kd`);
each peer logs `<stage>/<peer>/acc|f1|ece|agreement` (agreement with the student) and
`train/<peer>/loss_<term>`. Every model lives in the one checkpoint; `load_cohort_member` rebuilds any.
"""

from __future__ import annotations

from typing import Mapping

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from distillscope.distill.base import DistillLoss, DistillOutputs
from distillscope.errors import ConfigError
from distillscope.metrics import FidelityMetrics, label_metrics
from distillscope.models.factory import load_model_from_checkpoint, read_checkpoint, read_model_state
from distillscope.module import DistillationModule
from distillscope.validation import check_model_node, check_output_classes

STUDENT = "student"


class PeerMetrics(nn.Module):
    """One peer's label metrics and its top-1 agreement with the student, as `<stage>/<peer>/<name>`."""

    def __init__(self, num_classes: int, prefix: str):
        super().__init__()
        self.prefix = prefix
        self.labels = label_metrics(num_classes).clone(prefix=prefix)
        self.agreement = MulticlassAccuracy(num_classes, average="micro")

    def update(self, peer_logits: Tensor, targets: Tensor, student_logits: Tensor) -> None:
        self.labels.update(peer_logits.float(), targets)
        self.agreement.update(peer_logits.float(), student_logits.argmax(dim=1))

    def metric_objects(self) -> dict[str, object]:
        return {**dict(self.labels.items(keep_base=False, copy_state=False)), f"{self.prefix}agreement": self.agreement}


class MutualModule(DistillationModule):
    """The student and its peers learn from the labels and from each other (no frozen teacher)."""

    # train.build_module: teacher-reading terms are satisfied by the peers, not by a `teacher` config.
    peers_as_teachers = True

    def __init__(
        self,
        student: nn.Module,
        losses: Mapping[str, DistillLoss],
        num_classes: int,
        peers: Mapping[str, Mapping],
        teacher: nn.Module | None = None,
        **kwargs,
    ):
        if teacher is not None:
            raise ConfigError("teacher", "mutual learning trains its whole cohort from scratch; a frozen teacher is unused", "set teacher=none")
        if not peers:
            raise ConfigError("module.peers", "is empty", "name at least one peer model config, e.g. module.peers.peer1=<model config>")
        if STUDENT in peers:
            raise ConfigError(f"module.peers.{STUDENT}", f"'{STUDENT}' names the main model", "give the peer another name")
        tapping = [name for name, term in losses.items() if term.student_taps or term.teacher_taps]
        if tapping:
            raise ConfigError(f"distill.{tapping[0]}", "taps features, but mutual learning exchanges predictions only", "use logit-based terms (kd, dkd, dist, ...)")
        # Plain resolved dicts, so save_hyperparameters stores configs that rebuild each peer later.
        peers = {name: OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg) for name, cfg in peers.items()}
        super().__init__(student=student, losses=losses, num_classes=num_classes, teacher=None, **kwargs)
        built = {}
        for name, cfg in peers.items():
            check_model_node(DictConfig(cfg), f"module.peers.{name}")
            built[name] = instantiate(cfg).to(memory_format=self.memory_format)
        self.peers = nn.ModuleDict(built)
        self.peer_val_metrics = nn.ModuleDict({n: PeerMetrics(num_classes, f"val/{n}/") for n in built})
        self.peer_test_metrics = nn.ModuleDict({n: PeerMetrics(num_classes, f"test/{n}/") for n in built})

    def cohort(self) -> dict[str, nn.Module]:
        return {STUDENT: self.student, **self.peers}

    @torch.no_grad()
    def prepare(self, batch, num_train_samples: int | None = None) -> DistillOutputs:
        outputs = super().prepare(batch, num_train_samples)
        x = batch[0].contiguous(memory_format=self.memory_format)
        for name, peer in self.peers.items():
            was_training = peer.training
            peer.eval()
            check_output_classes(peer(x).shape[1], int(self.hparams.num_classes), f"module.peers.{name}")
            peer.train(was_training)
        return outputs

    def model_loss(self, name: str, logits: Tensor, others: list[Tensor], targets: Tensor) -> Tensor:
        """L_k for one cohort member; logged as train/loss_<term> (student) or train/<peer>/loss_<term>."""
        prefix = "train/" if name == STUDENT else f"train/{name}/"

        def value_of(term: DistillLoss) -> Tensor:
            if not term.needs_teacher:
                return term(DistillOutputs(student_logits=logits, targets=targets, epoch=self.current_epoch))
            return torch.stack([
                term(DistillOutputs(student_logits=logits, targets=targets, teacher_logits=other, epoch=self.current_epoch))
                for other in others
            ]).mean()

        return self.weighted_terms(value_of, prefix, logits.new_zeros(()))

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y, _ = batch
        x = x.contiguous(memory_format=self.memory_format)
        logits = {name: model(x) for name, model in self.cohort().items()}
        total = sum(
            self.model_loss(name, own, [other.detach() for n, other in logits.items() if n != name], y)
            for name, own in logits.items()
        )
        self.log("train/loss", total, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return total

    def _eval_step(self, batch, metrics: FidelityMetrics) -> None:
        x, y, _ = batch
        x = x.contiguous(memory_format=self.memory_format)
        student_logits = self.student(x)
        metrics.update(student_logits, y, None)
        self.log_dict(metrics.metric_objects(), on_step=False, on_epoch=True)
        peer_metrics = self.peer_val_metrics if metrics is self.val_metrics else self.peer_test_metrics
        for name, peer in self.peers.items():
            peer_metrics[name].update(peer(x), y, student_logits)
            self.log_dict(peer_metrics[name].metric_objects(), on_step=False, on_epoch=True)


def load_cohort_member(checkpoint: str, name: str = STUDENT) -> nn.Module:
    """Rebuild one trained cohort model (the student or a named peer) from a MutualModule checkpoint."""
    if name == STUDENT:
        return load_model_from_checkpoint(checkpoint)
    peers = read_checkpoint(checkpoint).get("hyper_parameters", {}).get("peers") or {}
    if name not in peers:
        raise ConfigError("name", f"no peer '{name}' in {checkpoint}", f"use one of: {', '.join([STUDENT, *peers])}")
    model = instantiate(dict(peers[name]))
    model.load_state_dict(read_model_state(checkpoint, prefix=f"peers.{name}."))
    return model

"""DistillationModule: a frozen teacher, a trainable student, and loss terms behind one interface."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

import lightning as L
import torch
from torch import Tensor, nn

from distillscope.distill.base import DistillLoss, DistillOutputs
from distillscope.metrics import FidelityMetrics
from distillscope.models.taps import FeatureTaps

TEACHER_PREFIX = "teacher."

# The frozen teacher is in eval mode on purpose; Lightning warns about every such module otherwise.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")


def freeze(model: nn.Module) -> nn.Module:
    """No gradients, eval mode (so batch-norm statistics never move)."""
    model.eval()
    model.requires_grad_(False)
    return model


class DistillationModule(L.LightningModule):
    """Trains `student` on `sum(weight_i * term_i(outputs))`; with no teacher that is plain supervised training.

    The teacher is frozen for the whole run: no grad, eval mode, absent from the optimizer and from
    checkpoints (they hold the student and any trainable adapters only).
    """

    def __init__(
        self,
        student: nn.Module,
        losses: Mapping[str, DistillLoss],
        num_classes: int,
        teacher: nn.Module | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        monitor: str = "val/acc",
        student_config: dict | None = None,
        teacher_config: dict | None = None,
        channels_last: bool = False,
        compile_student: bool = False,
    ):
        super().__init__()
        # The model configs go into every checkpoint so it can be rebuilt without the run's config.
        self.save_hyperparameters(ignore=["student", "teacher", "losses", "optimizer", "scheduler"])
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.student = student.to(memory_format=self.memory_format)
        self.teacher = freeze(teacher.to(memory_format=self.memory_format)) if teacher is not None else None
        # Set by distillscope.cache.setup_teacher_cache: training steps then read the teacher's outputs from it.
        self.teacher_cache = None
        self.losses = nn.ModuleDict(dict(losses))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        with_teacher = teacher is not None
        self.val_metrics = FidelityMetrics(num_classes, "val", with_teacher)
        self.test_metrics = FidelityMetrics(num_classes, "test", with_teacher)

        # tap -> config key of the term asking for it, so a bad path names e.g. distill.fitnet.student_taps
        student_taps = {str(t): f"distill.{n}.student_taps" for n, term in self.losses.items() for t in term.student_taps}
        teacher_taps = {str(t): f"distill.{n}.teacher_taps" for n, term in self.losses.items() for t in term.teacher_taps}
        self.student_taps = FeatureTaps(student, student_taps) if student_taps else None
        self.teacher_taps = None
        if teacher_taps:
            if teacher is None:
                raise ValueError("a loss term taps teacher features but no teacher is configured")
            self.teacher_taps = FeatureTaps(teacher, teacher_taps)

    # -- teacher stays frozen -------------------------------------------------------------------
    def train(self, mode: bool = True) -> "DistillationModule":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # Lightning calls .train() on the whole module every epoch
        return self

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(TEACHER_PREFIX)
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints omit the teacher; put the live teacher's weights back so loading stays strict.
        if self.teacher is not None:
            checkpoint["state_dict"].update(
                {TEACHER_PREFIX + k: v for k, v in self.teacher.state_dict().items()}
            )

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return self.student(x)

    def teacher_forward(self, x: Tensor) -> tuple[Tensor | None, dict[str, Tensor]]:
        if self.teacher is None:
            return None, {}
        with torch.inference_mode():  # no autograd bookkeeping at all for the frozen teacher
            logits = self.teacher(x)
            feats = self.teacher_taps.pop() if self.teacher_taps else {}
        # Inference tensors cannot be saved for backward, and loss terms save their targets: plain copies.
        return logits.clone(), {name: f.clone() for name, f in feats.items()}

    def compute_outputs(self, batch: tuple[Tensor, Tensor, Tensor], cached_teacher: bool = False) -> DistillOutputs:
        x, y, index = batch
        x = x.contiguous(memory_format=self.memory_format)
        if cached_teacher and self.teacher_cache is not None:
            teacher_logits, teacher_feats = self.teacher_cache.lookup(index, self.current_epoch)
        else:
            teacher_logits, teacher_feats = self.teacher_forward(x)
        student_logits = self.student(x)
        return DistillOutputs(
            student_logits=student_logits,
            targets=y,
            teacher_logits=teacher_logits,
            student_feats=self.student_taps.pop() if self.student_taps else {},
            teacher_feats=teacher_feats,
            inputs=x,
            index=index,
            student=self.student,
            teacher=self.teacher,
            epoch=self.current_epoch,
        )

    @torch.no_grad()
    def prepare(self, batch: tuple[Tensor, Tensor, Tensor], num_train_samples: int | None = None) -> DistillOutputs:
        """Dry forward on real data before training: lets terms build shape-dependent adapters."""
        was_training = self.student.training
        self.student.eval()  # keep batch-norm statistics untouched by the dry run
        outputs = self.compute_outputs(batch)
        outputs.num_train_samples = num_train_samples
        for term in self.losses.values():
            term.setup(outputs)
        self.student.train(was_training)
        return outputs

    # -- loss -----------------------------------------------------------------------------------
    def weighted_terms(self, value_of: Callable[[DistillLoss], Tensor], prefix: str, start: Tensor) -> Tensor:
        """`start` + sum of weight * value_of(term) over the terms, each logged as `<prefix>loss_<name>`."""
        total = start
        for name, term in self.losses.items():
            weight = term.current_weight(self.current_epoch)
            if weight == 0:
                continue  # a zero weight switches the term off entirely (and skips its cost)
            weighted = weight * value_of(term)
            self.log(f"{prefix}loss_{name}", weighted, on_step=False, on_epoch=True, sync_dist=True)
            total = total + weighted
        return total

    def total_loss(self, outputs: DistillOutputs, stage: str) -> Tensor:
        total = self.weighted_terms(lambda term: term(outputs), f"{stage}/", outputs.student_logits.new_zeros(()))
        self.log(f"{stage}/loss", total, on_step=False, on_epoch=True, prog_bar=stage == "train", sync_dist=True)
        return total

    def configure_model(self) -> None:
        # Compiled at fit start, after the eager dry run in prepare(); in place, so state-dict keys are unchanged.
        if self.hparams.compile_student and self.student._compiled_call_impl is None:
            self.student.compile()

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self.total_loss(self.compute_outputs(batch, cached_teacher=True), "train")

    def _eval_step(self, batch, metrics: FidelityMetrics) -> None:
        outputs = self.compute_outputs(batch)
        metrics.update(outputs.student_logits, outputs.targets, outputs.teacher_logits)
        self.log_dict(metrics.metric_objects(), on_step=False, on_epoch=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metrics)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metrics)

    # -- optimisation ---------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student and loss-term adapters; the frozen teacher has requires_grad=False throughout."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        factory = self.optimizer_factory or torch.optim.AdamW
        optimizer = factory(params=self.trainable_parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval, "monitor": self.hparams.monitor},
        }

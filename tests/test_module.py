"""DistillationModule: frozen teacher, loss composition, checkpoints without the teacher."""

import copy

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from distillscope.distill import CELoss, KDLoss
from distillscope.models import create_model
from distillscope.module import DistillationModule


def make_module(kd_weight=0.9, ce_weight=0.1, temperature=4.0):
    torch.manual_seed(0)
    teacher = create_model("cifar_resnet8", num_classes=10, in_chans=1)
    student = create_model("cifar_resnet8", num_classes=10, in_chans=1)
    losses = {"ce": CELoss(weight=ce_weight), "kd": KDLoss(weight=kd_weight, temperature=temperature)}
    return DistillationModule(student, losses, num_classes=10, teacher=teacher,
                              optimizer=lambda params: torch.optim.SGD(params, lr=0.1))


def loader(n=32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y, torch.arange(n)), batch_size=8)


def test_total_loss_is_weighted_sum_and_zero_kd_weight_gives_plain_ce():
    module = make_module(kd_weight=0.0, ce_weight=1.0)
    x, y, idx = next(iter(loader()))
    outputs = module.compute_outputs((x, y, idx))
    total = module.total_loss(outputs, "train")
    plain_ce = torch.nn.functional.cross_entropy(outputs.student_logits, y)
    assert total.item() == pytest.approx(plain_ce.item(), rel=1e-6)

    module = make_module(kd_weight=0.9, ce_weight=0.1, temperature=2.0)
    outputs = module.compute_outputs((x, y, idx))
    log_s = torch.log_softmax(outputs.student_logits / 2, 1)
    p_t = torch.softmax(outputs.teacher_logits / 2, 1)
    kl = (p_t * (p_t.log() - log_s)).sum(1).mean()  # independent KL formula
    expected = 0.1 * torch.nn.functional.cross_entropy(outputs.student_logits, y) + 0.9 * 4 * kl
    assert module.total_loss(outputs, "train").item() == pytest.approx(expected.item(), rel=1e-5)


def test_teacher_unchanged_by_training_and_kept_in_eval(tmp_path):
    module = make_module()
    teacher_before = copy.deepcopy(module.teacher.state_dict())  # weights and BN running stats
    student_before = copy.deepcopy(module.student.state_dict())
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=loader())
    assert not module.teacher.training
    for key, value in module.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), f"teacher {key} changed"
    assert any(not torch.equal(v, student_before[k]) for k, v in module.student.state_dict().items())
    optimizer = trainer.optimizers[0]
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not optimised & {id(p) for p in module.teacher.parameters()}
    assert all(not p.requires_grad for p in module.teacher.parameters())


def test_checkpoint_holds_student_only_and_reloads(tmp_path):
    module = make_module()
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                        limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(module, train_dataloaders=loader())
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert state and not any(k.startswith("teacher.") for k in state)
    fresh = make_module()
    fresh.student.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)
    trainer2 = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                         limit_val_batches=0, enable_checkpointing=False)
    trainer2.fit(fresh, train_dataloaders=loader(), ckpt_path=path)  # strict load must succeed
    assert trainer2.current_epoch == 2

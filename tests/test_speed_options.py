"""Training-step options: inference-mode teacher, channels_last, compile, batched on-device augmentation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_cfg, kd_overrides, tiny_run
from distillscope.cache import enable_batch_augmentation
from distillscope.train import build_module


def build(root, overrides):
    cfg = compose_cfg(overrides, root)
    datamodule = instantiate(cfg.data)
    enable_batch_augmentation(cfg, datamodule)
    return cfg, datamodule, build_module(cfg, datamodule)


def test_trainer_gpu_turns_on_bf16_channels_last_and_device_augmentation(tmp_path):
    cfg = compose_cfg(["trainer=gpu"], tmp_path)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
    assert cfg.speed.channels_last and cfg.speed.device_augment and not cfg.speed.compile
    assert "speed" not in cfg.trainer  # the Trainer gets only its own arguments
    default = compose_cfg([], tmp_path)
    assert not default.speed.channels_last and default.trainer.precision == "32-true"


def test_teacher_runs_in_inference_mode_and_returns_plain_tensors(tmp_path, teacher_ckpt):
    _, datamodule, module = build(tmp_path, kd_overrides(teacher_ckpt))
    modes = []
    module.teacher.register_forward_hook(lambda *a: modes.append(torch.is_inference_mode_enabled()))
    x, _, _ = datamodule.sample_batch(4)
    logits, _ = module.teacher_forward(x)
    assert modes == [True]
    assert not logits.is_inference() and not logits.requires_grad
    # Usable as a saved target: the KD loss backpropagates into the student.
    student_logits = module.student(x)
    torch.nn.functional.kl_div(student_logits.log_softmax(1), logits.log_softmax(1), log_target=True, reduction="batchmean").backward()
    assert module.student.fc.weight.grad.abs().sum() > 0


def test_channels_last_changes_layout_not_results(tmp_path, teacher_ckpt):
    _, datamodule, plain = build(tmp_path / "a", kd_overrides(teacher_ckpt))
    _, _, nhwc = build(tmp_path / "b", [*kd_overrides(teacher_ckpt), "speed.channels_last=true"])
    conv = next(m for m in nhwc.student.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    nhwc.student.load_state_dict(plain.student.state_dict())
    plain.eval(), nhwc.eval()
    batch = datamodule.sample_batch(8)
    with torch.no_grad():
        a, b = plain.compute_outputs(batch), nhwc.compute_outputs(batch)
    torch.testing.assert_close(b.student_logits, a.student_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.teacher_logits, a.teacher_logits, rtol=1e-4, atol=1e-4)
    assert b.inputs.is_contiguous(memory_format=torch.channels_last)


def test_compile_is_in_place_at_fit_start(tmp_path):
    _, _, module = build(tmp_path, ["speed.compile=true"])
    keys = list(module.student.state_dict())
    assert module.student._compiled_call_impl is None  # the dry run in prepare() stays eager
    module.configure_model()
    assert module.student._compiled_call_impl is not None
    assert list(module.student.state_dict()) == keys  # checkpoints keep their plain names


def test_device_augment_moves_crop_flip_to_batches(tmp_path):
    _, datamodule, _ = build(tmp_path, ["speed.device_augment=true", "data.crop_padding=3", "data.hflip=true"])
    aug = datamodule.batch_augmentation
    assert aug is not None and aug.num_draws is None  # no cache: a fresh draw every epoch
    assert datamodule.train_set.transform is not None and len(datamodule.train_set.transform.transforms) == 1  # Normalize only
    batch = next(iter(datamodule.train_dataloader()))
    datamodule.trainer = SimpleNamespace(training=False, current_epoch=0)
    assert datamodule.on_after_batch_transfer(batch, 0)[0] is batch[0]  # evaluation batches are untouched
    datamodule.trainer = SimpleNamespace(training=True, current_epoch=4)
    x, y, index = datamodule.on_after_batch_transfer(batch, 0)
    torch.testing.assert_close(x, aug.apply(batch[0], index, aug.draws(index, 4)))
    assert not torch.equal(x, batch[0]) and torch.equal(y, batch[1])


@pytest.mark.slow
def test_fast_options_train_end_to_end(tmp_path, teacher_ckpt):
    metrics, _ = tiny_run(tmp_path, *kd_overrides(teacher_ckpt), "speed.channels_last=true", "speed.device_augment=true",
                          "data.crop_padding=2", "teacher_cache.enabled=true", "report.enabled=false",
                          f"teacher_cache.dir={tmp_path}/cache")
    assert torch.isfinite(torch.tensor(metrics["train/loss_kd"])) and "val/agreement" in metrics

"""Teacher-output cache and replayable augmentation: same teacher outputs as a live teacher, reuse, keys."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from conftest import compose_cfg, kd_overrides, run_cli, tiny_run, ROOT
from distillscope import cache as cache_lib
from distillscope.cache import TeacherCache, enable_batch_augmentation, setup_teacher_cache
from distillscope.data import DigitsDataModule
from distillscope.data.replay import ReplayAugmentation
from distillscope.errors import ConfigError
from distillscope.train import build_module

AUG = ["data.crop_padding=2", "data.hflip=true"]


def built(root: Path, teacher_ckpt: Path, *extra: str):
    """(cfg, datamodule, module, cache) exactly as train() wires them."""
    from hydra.utils import instantiate

    cfg = compose_cfg([*kd_overrides(teacher_ckpt), "teacher_cache.enabled=true", "teacher_cache.num_draws=3", *extra], root)
    datamodule = instantiate(cfg.data)
    enable_batch_augmentation(cfg, datamodule)
    module = build_module(cfg, datamodule)
    return cfg, datamodule, module, setup_teacher_cache(cfg, module, datamodule)


def training_batch(datamodule, epoch: int):
    """One training batch through the datamodule's after-transfer hook, as the Trainer delivers it."""
    datamodule.trainer = SimpleNamespace(training=True, current_epoch=epoch)
    batch = next(iter(datamodule.train_dataloader()))
    return datamodule.on_after_batch_transfer(batch, 0)


def test_replay_equals_torchvision_crop_and_flip():
    aug = ReplayAugmentation(padding=3, hflip=True, seed=7, num_draws=4)
    x = torch.randn(16, 2, 10, 12)
    index, draw = torch.arange(100, 116), torch.arange(16) % 4
    top, left, flip = aug.params(index, draw)
    expected = []
    for i in range(16):  # torchvision's per-image ops with the same window
        img = TF.crop(TF.pad(x[i], [3, 3, 3, 3], padding_mode="reflect"), int(top[i]), int(left[i]), 10, 12)
        expected.append(TF.horizontal_flip(img) if flip[i] else img)
    assert torch.equal(aug.apply(x, index, draw), torch.stack(expected))
    assert 0 < int(flip.sum()) < 16 and int(top.max()) <= 6


def test_draws_replay_deterministically():
    aug = ReplayAugmentation(padding=4, hflip=True, seed=1, num_draws=3)
    index = torch.arange(3000)
    d0, d1 = aug.draws(index, 0), aug.draws(index, 1)
    assert torch.equal(d0, ReplayAugmentation(4, True, 1, 3).draws(index, 0))  # a fresh object replays it
    assert set(d0.tolist()) == {0, 1, 2} and 0.2 < (d0 != d1).float().mean() < 0.9
    assert torch.bincount(d0).min() > 800  # roughly uniform over draws
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(ReplayAugmentation(0, False, 1, 5)(x, index[:4], 3), x)  # nothing random: identity
    assert ReplayAugmentation(0, False, 1, 5).num_draws == 1


def test_cached_and_live_teacher_see_same_outputs(tmp_path, teacher_ckpt):
    _, dm, module, cache = built(tmp_path, teacher_ckpt, *AUG, "teacher_cache.dtype=fp32")
    assert cache.augmentation is dm.batch_augmentation and cache.augmentation.num_draws == 3
    for epoch in (0, 1):
        x, _, index = training_batch(dm, epoch)
        live, _ = module.teacher_forward(x)
        cached, _ = cache.lookup(index, epoch)
        torch.testing.assert_close(cached, live, rtol=1e-4, atol=1e-4)
    # The same sample under another draw is another image, with other teacher outputs.
    x, _, index = training_batch(dm, 0)
    other = (dm.batch_augmentation.draws(index, 0) + 1) % 3
    other_logits = torch.from_numpy(cache.arrays["logits"][other.numpy(), index.numpy()])
    assert not torch.allclose(other_logits, module.teacher_forward(x)[0], atol=1e-3)


def test_fp16_cache_and_training_step_never_runs_teacher(tmp_path, teacher_ckpt):
    _, dm, module, cache = built(tmp_path, teacher_ckpt, *AUG)
    assert cache.arrays["logits"].dtype.name == "float16"
    calls = []
    module.teacher.register_forward_hook(lambda *a: calls.append(1))
    batch = training_batch(dm, module.current_epoch)  # 0: no Trainer attached
    outputs = module.compute_outputs(batch, cached_teacher=True)
    assert calls == []
    live, _ = module.teacher_forward(batch[0])
    torch.testing.assert_close(outputs.teacher_logits, live, rtol=2e-3, atol=2e-2)  # fp16 rounding only
    # KD gradients reach the student from cached and from inference-mode live targets alike.
    for teacher_logits in (outputs.teacher_logits, live):
        module.student.zero_grad()
        outputs.student_logits = module.student(batch[0])
        outputs.teacher_logits = teacher_logits
        module.losses["kd"](outputs).backward()
        assert module.student.fc.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in module.teacher.parameters())


def test_topk_keeps_top_logits_and_spreads_the_rest(tmp_path):
    values = torch.tensor([[3.0, 1.0], [0.5, 0.2]])
    indices = torch.tensor([[2, 0], [1, 3]])
    full = torch.tensor([[1.0, -1.0, 3.0, 0.0], [-2.0, 0.5, -1.0, 0.2]])
    lse = full.logsumexp(1)
    stub = TeacherCache.__new__(TeacherCache)
    stub.num_classes = 4
    out = stub._expand_topk(values, indices, lse)
    p, q = full.softmax(1), out.softmax(1)
    for r in range(2):  # stored classes keep their exact probability, the others share what is left equally
        kept = indices[r]
        torch.testing.assert_close(q[r, kept], p[r, kept])
        rest = [c for c in range(4) if c not in kept.tolist()]
        torch.testing.assert_close(q[r, rest], torch.full((2,), (1 - p[r, kept].sum().item()) / 2))


def test_topk_cache_builds_and_reads(tmp_path, teacher_ckpt):
    _, dm, module, cache = built(tmp_path, teacher_ckpt, "teacher_cache.topk=3")
    assert cache.augmentation.num_draws == 1  # digits default: no augmentation, one draw is enough
    assert set(cache.arrays) == {"topk_values", "topk_indices", "logsumexp"}
    x, _, index = next(iter(dm.train_dataloader()))
    live, _ = module.teacher_forward(x)
    cached, _ = cache.lookup(index, 5)
    assert torch.equal(cached.topk(3).indices.sort(1).values, live.topk(3).indices.sort(1).values)


def test_second_run_reuses_cache_and_stale_keys_rebuild(tmp_path, teacher_ckpt, monkeypatch):
    cache_dir = tmp_path / "shared"
    base = [*kd_overrides(teacher_ckpt), "teacher_cache.enabled=true", f"teacher_cache.dir={cache_dir}", *AUG,
            "test_after_fit=false", "report.enabled=false", "trainer.limit_val_batches=1"]
    tiny_run(tmp_path / "a", *base)
    first = sorted(cache_dir.iterdir())
    assert len(first) == 1 and json.loads((first[0] / "meta.json").read_text())["key"]["augmentation"]["padding"] == 2

    def no_build(*args, **kwargs):
        raise AssertionError("the second run rebuilt the teacher cache")

    monkeypatch.setattr(cache_lib, "build_cache", no_build)
    tiny_run(tmp_path / "b", *base, "trainer.max_epochs=1")
    monkeypatch.undo()
    # Another transform setting is another key: a new cache, never the old one.
    tiny_run(tmp_path / "c", *base, "data.crop_padding=1")
    assert len(list(cache_dir.iterdir())) == 2


def test_teacher_hash_changes_with_weights(teacher_ckpt):
    from distillscope.models import load_model_from_checkpoint

    teacher = load_model_from_checkpoint(str(teacher_ckpt))
    before = cache_lib.teacher_hash(teacher)
    assert before == cache_lib.teacher_hash(load_model_from_checkpoint(str(teacher_ckpt)))
    with torch.no_grad():
        next(teacher.parameters()).view(-1)[0] += 1e-3
    assert cache_lib.teacher_hash(teacher) != before


class CutoutDigits(DigitsDataModule):
    """A datamodule with its own augmentation, which the cache cannot replay."""

    def train_augmentation(self) -> list:
        from torchvision.transforms import v2

        return [v2.RandomErasing(p=0.5)]


def test_unreplayable_augmentation_falls_back_to_live_teacher(tmp_path, teacher_ckpt):
    from hydra.utils import instantiate

    cfg = compose_cfg([*kd_overrides(teacher_ckpt), "teacher_cache.enabled=true", "data._target_=test_cache.CutoutDigits"], tmp_path)
    datamodule = instantiate(cfg.data)
    assert enable_batch_augmentation(cfg, datamodule) is None
    module = build_module(cfg, datamodule)
    with pytest.warns(UserWarning, match="cannot be replayed; using live teacher"):
        assert setup_teacher_cache(cfg, module, datamodule) is None
    assert module.teacher_cache is None


def test_bad_cache_settings_are_config_errors(tmp_path, teacher_ckpt):
    with pytest.raises(ConfigError, match="teacher_cache.dtype"):
        built(tmp_path, teacher_ckpt, "teacher_cache.dtype=int8")
    from hydra.utils import instantiate

    cfg = compose_cfg(["teacher_cache.enabled=true"], tmp_path)  # no teacher configured
    datamodule = instantiate(cfg.data)
    enable_batch_augmentation(cfg, datamodule)
    module = build_module(cfg, datamodule)
    with pytest.raises(ConfigError, match="teacher_cache.enabled"):
        setup_teacher_cache(cfg, module, datamodule)


def test_cli_builds_then_reuses_the_cache(tmp_path, teacher_ckpt):
    args = [*kd_overrides(teacher_ckpt), "teacher_cache.enabled=true", f"teacher_cache.dir={tmp_path}/cache",
            "logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "test_after_fit=false", "data.batch_size=32", f"hydra.run.dir={tmp_path}/run", *AUG]
    result = run_cli(args, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "teacher cache: building" in result.stdout + result.stderr
    assert len(list((tmp_path / "cache").glob("*/meta.json"))) == 1


@pytest.mark.slow
def test_cached_and_live_runs_reach_the_same_accuracy(tmp_path, teacher_ckpt):
    """No augmentation, same seed, fp32 cache: the two runs train on the same numbers."""
    common = [*kd_overrides(teacher_ckpt), "trainer.max_epochs=3", "trainer.limit_train_batches=null",
              "trainer.limit_val_batches=null", "trainer.limit_test_batches=null", "data.batch_size=128"]
    live, _ = tiny_run(tmp_path / "live", *common)
    cached, _ = tiny_run(tmp_path / "cached", *common, "teacher_cache.enabled=true", "teacher_cache.dtype=fp32")
    assert cached["test/acc"] == pytest.approx(live["test/acc"], abs=1e-6)


def test_cache_key_covers_teacher_settings_beyond_weights():
    # An ensemble's mode or temperature changes its outputs without changing any weight.
    from omegaconf import OmegaConf

    from distillscope.data import DigitsDataModule
    from distillscope.models import create_model

    dm = DigitsDataModule(crop_padding=2)
    augmentation = dm.use_batch_augmentation(2)
    dm.setup()
    teacher = create_model("cifar_resnet8", num_classes=10, in_chans=1)
    node = OmegaConf.create({"dtype": "fp16", "topk": None})
    mean, confident = (cache_lib.cache_key(teacher, dm, {}, augmentation, node, [], {"mode": m}) for m in ("mean", "confidence"))
    assert mean["teacher_sha256"] == confident["teacher_sha256"]
    assert mean != confident

"""Teacher-output cache: run the frozen teacher once over (training sample, augmentation draw), reuse it.

A cache lives in `<teacher_cache.dir>/<key digest>/`: `meta.json` (the full key, written last, so a
half-built cache is never read) and `.npy` arrays opened as memory maps. The key holds the teacher's
weights hash, the dataset identity, the transform settings and the storage format, so any change gives a
new directory: a stale cache cannot be used by mistake, and runs or sweep trials with the same teacher
and data share one. Training batches look their teacher outputs up by (sample index, draw of this epoch);
the draws replay the exact augmentation the cache was built with (`data/replay.py`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distillscope.data.base import ImageDataModule
from distillscope.data.replay import ReplayAugmentation
from distillscope.errors import ConfigError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_DTYPES = {"fp16": np.float16, "fp32": np.float32}
# Data settings that change how fast batches arrive, never what is in them.
_LOADER_KEYS = {"batch_size", "eval_batch_size", "num_workers", "pin_memory", "download", "data_dir", "root"}


def teacher_hash(teacher: nn.Module) -> str:
    """sha256 of the teacher's weights and buffers: the checkpoint's content, whatever file it came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def dataset_identity(datamodule: ImageDataModule, data_cfg: dict) -> dict:
    """Class, content-defining settings, training-set size and a fingerprint of the first samples."""
    train_set = datamodule.train_set
    digest = hashlib.sha256()
    for i in range(min(8, len(train_set))):
        x, y, _ = train_set[i]
        digest.update(x.numpy().tobytes() + str(int(y)).encode())
    settings = {k: v for k, v in data_cfg.items() if k not in _LOADER_KEYS}
    return {"class": type(datamodule).__qualname__, "settings": settings, "train_size": len(train_set),
            "fingerprint": digest.hexdigest()}


class TeacherCache:
    """Memory-mapped teacher logits (fp16/fp32, or top-k) and optional tapped features, per (draw, sample)."""

    def __init__(self, path: Path, augmentation: ReplayAugmentation):
        self.path = Path(path)
        self.meta = json.loads((self.path / "meta.json").read_text())
        self.augmentation = augmentation
        # Copy-on-write maps: writable (torch.from_numpy wants that) but the file is never modified.
        self.arrays = {p.stem: np.load(p, mmap_mode="c") for p in sorted(self.path.glob("*.npy"))}
        self.num_classes = int(self.meta["num_classes"])
        self.topk = self.meta["key"]["storage"]["topk"]
        self.feature_names = list(self.meta["features"])
        self._on_device: dict[str, Tensor] = {}

    def _gather(self, name: str, draw: Tensor, index: Tensor) -> Tensor:
        if index.device.type == "cpu":  # fancy-index the memory map: reads only these rows
            return torch.from_numpy(self.arrays[name][draw.numpy(), index.numpy()])
        # On an accelerator, indexing the host map would sync every step: keep the array on the device.
        if name not in self._on_device:
            self._on_device[name] = torch.from_numpy(np.ascontiguousarray(self.arrays[name])).to(index.device)
        return self._on_device[name][draw, index]

    def lookup(self, index: Tensor, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher logits (float32) and features for these samples, as augmented in `epoch`."""
        draw = self.augmentation.draws(index, epoch)
        if self.topk:
            logits = self._expand_topk(*(self._gather(n, draw, index) for n in ("topk_values", "topk_indices", "logsumexp")))
        else:
            logits = self._gather("logits", draw, index).float()
        feats = {name: self._gather(f"feature_{i}", draw, index).float() for i, name in enumerate(self.feature_names)}
        return logits, feats

    def _expand_topk(self, values: Tensor, indices: Tensor, lse: Tensor) -> Tensor:
        """Full logits with the k stored ones exact and the others sharing the left-over probability mass."""
        values = values.float()
        rest = self.num_classes - values.shape[1]
        logits = values.new_empty(values.shape[0], self.num_classes)
        if rest:
            lse = lse.float()[:, None]
            left_over = (1 - (values - lse).exp().sum(1, keepdim=True)).clamp_min(1e-12)
            logits.copy_((lse + (left_over / rest).log()).expand_as(logits))
        return logits.scatter_(1, indices.long(), values)


def cache_key(teacher: nn.Module, datamodule: ImageDataModule, data_cfg: dict, augmentation: ReplayAugmentation,
              cfg: DictConfig, feature_names: list[str], cfg_teacher: dict | None = None) -> dict:
    return {
        "version": FORMAT_VERSION,
        "teacher_sha256": teacher_hash(teacher),
        # Settings that change the teacher's outputs without being weights (an ensemble's mode/temperature).
        "teacher_config": cfg_teacher,
        "dataset": dataset_identity(datamodule, data_cfg),
        "augmentation": augmentation.settings(),
        "storage": {"dtype": str(cfg.dtype), "topk": cfg.topk, "features": feature_names},
    }


@torch.no_grad()
def build_cache(path: Path, key: dict, teacher_forward, datamodule: ImageDataModule,
                augmentation: ReplayAugmentation, cfg: DictConfig, device: torch.device) -> None:
    """One teacher pass per draw over the training set, written to a temporary folder then renamed."""
    start = time.perf_counter()
    train_set = datamodule.train_set
    num_samples, num_draws = len(train_set), augmentation.num_draws
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = _DTYPES[str(cfg.dtype)]
    arrays: dict[str, np.memmap] = {}

    def array(name: str, shape: tuple, np_dtype) -> np.memmap:
        if name not in arrays:
            arrays[name] = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=np_dtype, shape=(num_draws, num_samples, *shape))
        return arrays[name]

    loader = DataLoader(train_set, batch_size=int(cfg.batch_size), shuffle=False, num_workers=datamodule.num_workers)
    feature_names: list[str] = []
    num_classes = 0
    for draw in range(num_draws):
        for x, _, index in loader:
            x = augmentation.apply(x.to(device), index.to(device), torch.full_like(index, draw).to(device))
            logits, feats = teacher_forward(x)
            logits, rows = logits.float().cpu(), index.numpy()
            num_classes = logits.shape[1]
            if cfg.topk:
                k = min(int(cfg.topk), num_classes)
                top = logits.topk(k, dim=1)
                array("topk_values", (k,), dtype)[draw, rows] = top.values.numpy()
                array("topk_indices", (k,), np.int16 if num_classes < 2**15 else np.int32)[draw, rows] = top.indices.numpy()
                array("logsumexp", (), np.float32)[draw, rows] = logits.logsumexp(1).numpy()
            else:
                array("logits", (num_classes,), dtype)[draw, rows] = logits.numpy()
            if cfg.features:
                feature_names = sorted(feats)
                for i, name in enumerate(feature_names):
                    value = feats[name].float().cpu()
                    array(f"feature_{i}", tuple(value.shape[1:]), dtype)[draw, rows] = value.numpy()
    for arr in arrays.values():
        arr.flush()
    meta = {"key": key, "num_classes": num_classes, "num_samples": num_samples, "features": feature_names,
            "build_seconds": round(time.perf_counter() - start, 2)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    try:
        tmp.rename(path)
    except OSError:  # another run (a parallel sweep trial) finished the same cache first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("teacher cache built in %.1fs: %s", meta["build_seconds"], path)


def replay_supported(datamodule) -> bool:
    """Only the built-in crop/flip recipe can be replayed; a subclass with its own augmentation cannot."""
    return isinstance(datamodule, ImageDataModule) and (
        type(datamodule).train_augmentation is ImageDataModule.train_augmentation
    )


def setup_teacher_cache(cfg: DictConfig, module, datamodule) -> TeacherCache | None:
    """Find (or build) the cache for this run and attach it to the module; None means a live teacher."""
    node = cfg.get("teacher_cache")
    if not node or not node.enabled:
        return None
    if module.teacher is None:
        raise ConfigError("teacher_cache.enabled", "caches teacher outputs but no teacher is configured", "set teacher_cache.enabled=false or configure a teacher")
    if str(node.dtype) not in _DTYPES:
        raise ConfigError("teacher_cache.dtype", f"unknown storage type '{node.dtype}'", "use fp16 or fp32")
    if node.topk is not None and int(node.topk) < 1:
        raise ConfigError("teacher_cache.topk", f"must be >= 1 or null, got {node.topk}", "use e.g. 10, or null to keep every logit")
    if module.teacher_taps is not None and not node.features:
        raise ConfigError("teacher_cache.features", "a distill term taps teacher features, which the cache would not hold", "set teacher_cache.features=true")
    augmentation = datamodule.batch_augmentation
    if augmentation is None:
        warnings.warn(
            f"teacher_cache: {type(datamodule).__name__} has augmentation that cannot be replayed; "
            "using live teacher forwards", stacklevel=2)
        return None
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    feature_names = sorted(module.teacher_taps.paths) if (module.teacher_taps and node.features) else []
    key = cache_key(module.teacher, datamodule, data_cfg, augmentation, node, feature_names,
                    module.hparams.get("teacher_config"))
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(node.dir) / digest
    if (path / "meta.json").is_file():
        log.info("teacher cache: reusing %s", path)
    else:
        log.info("teacher cache: building %s (%d draws x %d samples)", path, augmentation.num_draws, len(datamodule.train_set))
        # Built before Lightning moves the models: use the run's accelerator for the teacher pass, then put it back.
        device = torch.device("cuda" if cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu")
        home = next(module.teacher.parameters(), torch.empty(0)).device
        module.teacher.to(device)
        # Its DataLoader draws a seed from the global RNG: fork it so the run's shuffling matches a live-teacher run.
        with torch.random.fork_rng(devices=[]):
            build_cache(path, key, module.teacher_forward, datamodule, augmentation, node, device)
        module.teacher.to(home)
    cache = TeacherCache(path, augmentation)
    module.teacher_cache = cache
    return cache


def enable_batch_augmentation(cfg: DictConfig, datamodule) -> ReplayAugmentation | None:
    """Batched on-device augmentation when asked for (speed.device_augment) or when a cache must replay it."""
    node = cfg.get("teacher_cache")
    caching = bool(node and node.enabled)
    if not (caching or cfg.get("speed", {}).get("device_augment")) or not replay_supported(datamodule):
        return None
    return datamodule.use_batch_augmentation(int(node.num_draws) if caching else None)

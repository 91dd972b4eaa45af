"""Shared test helpers: compose the real Hydra config, run tiny trainings in-process or via the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import distillscope  # noqa: F401  (registers the config resolvers)
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

# Tiny limits: one epoch of two batches. Enough to run every code path, seconds per run.
FAST = [
    "logger=csv",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "report.latency_repeats=2",
    "data.batch_size=32",
]

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def compose_cfg(overrides: list[str], root: Path) -> DictConfig:
    """The config `python -m distillscope.train <overrides>` would see, with all paths under `root`."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"paths.root_dir={root}", f"paths.output_dir={root}/run", *overrides],
        )
    with open_dict(cfg):
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    return cfg


def tiny_run(root: Path, *overrides: str, fast: bool = True) -> tuple[dict, Path]:
    """Train in-process through `distillscope.train.train`; returns (metrics, run directory)."""
    from distillscope.train import train

    cfg = compose_cfg([*(FAST if fast else []), *overrides], root)
    metrics = train(cfg)
    return metrics, Path(cfg.paths.output_dir)


def run_cli(args: list[str], cwd: Path, timeout: int = 300, module: str = "distillscope.train") -> subprocess.CompletedProcess:
    """The real command line in a subprocess, as a user types it."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture(scope="session")
def teacher_ckpt(tmp_path_factory) -> Path:
    """A small digits teacher (CIFAR ResNet-8, a few batches), saved as `make teacher` saves one."""
    root = tmp_path_factory.mktemp("teacher")
    tiny_run(root, "experiment=digits_teacher", "student=cifar_resnet8", "trainer.limit_train_batches=4")
    path = root / "artifacts" / "digits_teacher.ckpt"
    assert path.is_file()
    return path


def kd_overrides(teacher_ckpt: Path, *extra: str) -> list[str]:
    """Overrides for a tiny digits KD run from `teacher_ckpt`."""
    return ["experiment=digits_kd", f"teacher.checkpoint={teacher_ckpt}", "report.baseline_checkpoint=null", *extra]


def write_fake_cifar(root: Path, num_classes: int = 100, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """Small random data in CIFAR's real on-disk format (the python pickles torchvision reads)."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder = root / ("cifar-100-python" if num_classes == 100 else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    label_key = "fine_labels" if num_classes == 100 else "labels"

    def batch(n: int) -> dict:
        return {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                label_key: [int(i % num_classes) for i in range(n)],
                "filenames": [f"img_{i}.png" for i in range(n)]}

    if num_classes == 100:
        files = {"train": batch(n_train), "test": batch(n_test),
                 "meta": {"fine_label_names": [f"class_{i}" for i in range(100)]}}
    else:
        per = n_train // 5
        files = {f"data_batch_{i}": batch(per) for i in range(1, 6)}
        files["test_batch"] = batch(n_test)
        files["batches.meta"] = {"label_names": [f"class_{i}" for i in range(10)]}
    for name, content in files.items():
        with open(folder / name, "wb") as fh:
            pickle.dump(content, fh)
    return root


@pytest.fixture(scope="session")
def fake_cifar100(tmp_path_factory) -> Path:
    return write_fake_cifar(tmp_path_factory.mktemp("cifar100"), 100)


def cifar_overrides(data_dir: Path, *extra: str) -> list[str]:
    """A CIFAR-100-shaped (32x32x3, 100 classes) run on the fake files; no download."""
    return ["data=cifar100", f"data.data_dir={data_dir}", "data.verify_checksums=false", "data.num_workers=0",
            "data.pin_memory=false", *extra]

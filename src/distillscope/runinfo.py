"""run.json: what produced a run (resolved config, code version, packages, command line, times)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

PACKAGES = (
    "distillscope", "torch", "torchvision", "lightning", "torchmetrics", "timm", "hydra-core",
    "omegaconf", "wandb", "captum", "scikit-learn", "numpy",
)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stamp() -> str:
    """A file-name-safe timestamp, fixed for the life of the process (one name per resumed run)."""
    return _STAMP


_STAMP = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def git_state(cwd: Path) -> dict:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_run_record(path: Path, cfg: DictConfig, code_dir: Path, **extra) -> dict:
    record = {
        "command": [sys.executable, *sys.argv],
        "started": now(),
        "finished": None,
        "status": "running",
        "git": git_state(code_dir),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        **extra,
    }
    path.write_text(json.dumps(record, indent=2, default=str))
    return record


def finish_run_record(path: Path, status: str, **extra) -> None:
    record = json.loads(path.read_text())
    record.update(finished=now(), status=status, **extra)
    path.write_text(json.dumps(record, indent=2, default=str))

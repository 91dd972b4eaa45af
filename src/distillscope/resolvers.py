"""OmegaConf resolvers the configs use; registered when the package is imported."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def wandb_offline() -> bool:
    """Offline unless the user is logged in to W&B or asked for online mode explicitly."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("online", "run"):
        return False
    if mode:
        return True
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def register() -> None:
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)

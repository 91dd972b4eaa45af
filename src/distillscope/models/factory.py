"""Teacher and student construction: any timm name, the project's CIFAR ResNets, or a checkpoint."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from distillscope.errors import ConfigError
from distillscope.models import cifar_resnet  # noqa: F401  (registers cifar_* names with timm)


def check_model_name(name: str, key: str) -> None:
    """Fail early, with close matches, when `name` is not a model timm can build."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models() for valid names"
    raise ConfigError(key, f"unknown timm model '{name}'", hint)


def create_model(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    pretrained: bool = False,
    checkpoint: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build `name` with timm (pretrained weights need internet); optionally load our checkpoint."""
    check_model_name(name, "model.name")
    model = timm.create_model(
        name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs
    )
    if checkpoint:
        model.load_state_dict(read_model_state(checkpoint))
    return model


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError("teacher.checkpoint", f"no file at {path}", "run `make teacher` or point it at a saved .ckpt")
    return torch.load(path, map_location="cpu", weights_only=False)


def read_model_state(path: str | Path, prefix: str = "student.") -> dict[str, torch.Tensor]:
    """Weights of the trained network from a distillscope Lightning checkpoint (or a bare state dict)."""
    ckpt = read_checkpoint(path)
    state = ckpt.get("state_dict", ckpt)
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def stored_model_config(checkpoint: str) -> dict:
    """The model config (`_target_` and arguments) a distillscope run saved in its checkpoint."""
    model_cfg = dict(read_checkpoint(checkpoint).get("hyper_parameters", {}).get("student_config") or {})
    if not model_cfg:
        raise ConfigError(
            "teacher.checkpoint",
            f"{checkpoint} holds no model config (not written by distillscope)",
            "use teacher=timm with teacher.name=<arch> teacher.checkpoint=<file> instead",
        )
    return model_cfg


def load_model_from_checkpoint(checkpoint: str, **overrides: Any) -> nn.Module:
    """Rebuild the network a distillscope run trained, from the model config stored in its checkpoint."""
    model_cfg = {**stored_model_config(checkpoint), **overrides}
    from hydra.utils import instantiate

    model_cfg.pop("checkpoint", None)
    model = instantiate(model_cfg)
    model.load_state_dict(read_model_state(checkpoint))
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

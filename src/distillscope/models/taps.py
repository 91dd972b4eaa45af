"""Feature taps: capture intermediate activations by module path, without editing the model."""

from __future__ import annotations

import difflib
from typing import Iterable, Mapping

from torch import Tensor, nn

from distillscope.errors import ConfigError


def resolve_tap(model: nn.Module, tap: str | int, key: str) -> str:
    """Map a tap spec to a module path. Ints (or 'stage:N') index the model's timm `feature_info`."""
    spec = str(tap)
    entries = feature_entries(model)
    names = dict(model.named_modules())
    if entries is None and spec in names:
        return spec  # e.g. "0", a child of nn.Sequential
    if spec.startswith("stage:") or spec.lstrip("-").isdigit():
        idx = int(spec.split(":")[-1])
        if entries is None:
            raise ConfigError(key, f"stage index {idx} given but {type(model).__name__} has no timm feature_info", "tap a module path instead")
        try:
            return entries[idx]["module"]
        except IndexError:
            raise ConfigError(key, f"stage index {idx} out of range ({len(entries)} stages)", f"use -{len(entries)}..{len(entries) - 1}") from None
    if spec not in names:
        close = difflib.get_close_matches(spec, list(names), n=5, cutoff=0.5)
        valid = close or [n for n in names if n and "." not in n]
        stages = f" (stage indices 0..{len(entries) - 1}: {', '.join(e['module'] for e in entries)})" if entries else ""
        raise ConfigError(key, f"no module '{spec}' in {type(model).__name__}", f"use one of: {', '.join(valid)}{stages}")
    return spec


def feature_entries(model: nn.Module) -> list[dict] | None:
    """The model's timm `feature_info` as a list of dicts (num_chs, reduction, module), or None."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return None
    return info.get_dicts() if hasattr(info, "get_dicts") else list(info)


class FeatureTaps:
    """Forward hooks that store the outputs of named modules in `self.features` on each forward."""

    def __init__(self, model: nn.Module, taps: Mapping[str | int, str] | Iterable[str | int], key: str = "taps"):
        # A mapping gives each tap the config key that asked for it (named in errors).
        keys = dict(taps) if isinstance(taps, Mapping) else {t: key for t in taps}
        self.paths = {str(t): resolve_tap(model, t, k) for t, k in keys.items()}
        self.features: dict[str, Tensor] = {}
        modules = dict(model.named_modules())
        self._handles = []
        for tap, path in self.paths.items():
            self._handles.append(modules[path].register_forward_hook(self._hook(tap)))

    def _hook(self, tap: str):
        def store(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            self.features[tap] = output

        return store

    def pop(self) -> dict[str, Tensor]:
        """Features of the last forward; clears them so stale activations are never reused."""
        feats, self.features = self.features, {}
        return feats

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

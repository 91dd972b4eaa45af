"""Attribution maps with Captum: Grad-CAM on an automatically found layer, Integrated Gradients, saliency.

Every method returns one non-negative (N, H, W) map per image at input resolution, so maps of models with
different architectures (teacher vs student) can be compared pixel by pixel.
"""

from __future__ import annotations

from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Saliency
from torch import Tensor, nn

from distillscope.errors import ConfigError

METHODS = ("gradcam", "integrated_gradients", "saliency")


def feature_stages(model: nn.Module) -> list[dict]:
    """timm's `feature_info` as a list of dicts (timm models carry a FeatureInfo or a plain list)."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    return info.get_dicts() if hasattr(info, "get_dicts") else list(info)


def find_gradcam_layer(model: nn.Module, image_size: int | None = None, min_resolution: int = 4) -> str:
    """Module path Grad-CAM should attribute to: the last feature stage of a timm model.

    On small inputs the last stage can be 1x1 (timm ResNet-18 on 32x32 digits), where Grad-CAM is a
    constant; given `image_size`, the last stage still at least `min_resolution` pixels wide is chosen.
    Models without `feature_info` fall back to their last Conv2d.
    """
    stages = [s for s in feature_stages(model) if s.get("module")]
    if image_size is not None:
        wide = [s for s in stages if image_size // int(s.get("reduction", 1)) >= min_resolution]
        stages = wide or stages[:1]
    if stages:
        return stages[-1]["module"]
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError("explain.gradcam_layer", f"{type(model).__name__} has no feature_info and no Conv2d", "set explain.methods without gradcam")
    return convs[-1]


def get_module(model: nn.Module, path: str, key: str = "explain.gradcam_layer") -> nn.Module:
    modules = dict(model.named_modules())
    if path not in modules:
        valid = [n for n in modules if n and n.count(".") <= 1]
        raise ConfigError(key, f"no module '{path}' in {type(model).__name__}", f"use one of: {', '.join(valid[:20])}")
    return modules[path]


def supports_gradcam(model: nn.Module) -> bool:
    return bool(feature_stages(model)) or any(isinstance(m, nn.Conv2d) for m in model.modules())


def attribute(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    method: str,
    gradcam_layer: str | None = None,
    ig_steps: int = 16,
) -> Tensor:
    """(N, H, W) non-negative attribution of `target` (one class per image) for `inputs` (N, C, H, W)."""
    model.eval()
    inputs = inputs.detach().clone().requires_grad_(True)
    if method == "gradcam":
        layer = get_module(model, gradcam_layer or find_gradcam_layer(model, inputs.shape[-1]))
        cam = LayerGradCam(model, layer).attribute(inputs, target=target, relu_attributions=True)
        maps = LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
        return maps.sum(1).clamp_min(0).detach()
    if method == "integrated_gradients":
        # All-zero baseline in normalised space: the data mean, i.e. "no information".
        attr = IntegratedGradients(model).attribute(inputs, baselines=0.0, target=target, n_steps=ig_steps, internal_batch_size=len(inputs) * ig_steps)
    elif method == "saliency":
        attr = Saliency(model).attribute(inputs, target=target, abs=True)
    else:
        raise ConfigError("explain.methods", f"unknown attribution method '{method}'", f"use any of {', '.join(METHODS)}")
    return attr.abs().sum(1).detach()  # channel-summed magnitude: how much each pixel matters

"""CIFAR-style ResNets (32x32 inputs) used by the KD literature, registered in timm's model registry.

Layouts follow RepDistiller (HobbitLong/RepDistiller, models/resnet.py): a 3x3 stem without
downsampling, three stages of basic blocks (two stride-2), global pooling, a linear head.
`resnet8x4`/`resnet32x4` widen every stage 4x. Registering with timm means `timm.create_model`
builds them by name like any other timm model, and they expose `feature_info` for feature taps.
"""

from __future__ import annotations

import torch
from timm.models import register_model
from torch import Tensor, nn


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Not in-place: feature taps may hold a reference to the block output.
        return torch.relu(out + identity)


class CifarResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        widths: tuple[int, int, int, int],
        num_classes: int = 100,
        in_chans: int = 3,
        **_: object,  # timm passes pretrained_cfg etc.; nothing pretrained exists for these
    ):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages, in_ch = [], widths[0]
        for i, out_ch in enumerate(widths[1:]):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(in_ch, out_ch, stride)]
            layers += [BasicBlock(out_ch, out_ch) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.num_features = in_ch
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        # Same shape as timm's feature_info, so stage indices resolve the same way for both.
        self.feature_info = [
            {"num_chs": w, "reduction": 1 if i == 0 else 2 ** (i - 1), "module": f"stages.{i - 1}"}
            if i > 0
            else {"num_chs": w, "reduction": 1, "module": "stem"}
            for i, w in enumerate(widths)
        ]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.global_pool(x), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


_VARIANTS = {
    "cifar_resnet8": (8, (16, 16, 32, 64)),
    "cifar_resnet14": (14, (16, 16, 32, 64)),
    "cifar_resnet20": (20, (16, 16, 32, 64)),
    "cifar_resnet32": (32, (16, 16, 32, 64)),
    "cifar_resnet44": (44, (16, 16, 32, 64)),
    "cifar_resnet56": (56, (16, 16, 32, 64)),
    "cifar_resnet110": (110, (16, 16, 32, 64)),
    "cifar_resnet8x4": (8, (32, 64, 128, 256)),
    "cifar_resnet32x4": (32, (32, 64, 128, 256)),
}


def _make_factory(name: str, depth: int, widths: tuple[int, int, int, int]):
    def factory(pretrained: bool = False, **kwargs) -> CifarResNet:
        if pretrained:
            raise ValueError(f"{name} has no pretrained weights; set pretrained=false")
        return CifarResNet(depth, widths, **kwargs)

    factory.__name__ = name
    factory.__doc__ = f"CIFAR ResNet-{depth}, stage widths {widths} (RepDistiller layout)."
    factory.__module__ = __name__
    return factory


for _name, (_depth, _widths) in _VARIANTS.items():
    globals()[_name] = register_model(_make_factory(_name, _depth, _widths))

CIFAR_RESNETS = tuple(_VARIANTS)

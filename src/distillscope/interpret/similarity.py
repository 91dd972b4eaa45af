"""How alike two models' explanation maps are, image by image (torchmetrics for the correlations).

- cosine: of the raw maps (non-negative maps, so unrelated maps still score above 0);
- spearman: rank correlation of pixel importances (1 identical order, about 0 unrelated);
- topk_iou: intersection over union of each map's top-k% pixels (chance level is k / (2 - k)).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional import cosine_similarity, spearman_corrcoef

SIMILARITIES = ("cosine", "spearman", "topk_iou")


def _flat(maps: Tensor) -> Tensor:
    return maps.reshape(maps.shape[0], -1).double()


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Per-image cosine similarity of (N, H, W) maps; 0 where a map is all zero."""
    return cosine_similarity(_flat(a), _flat(b), reduction="none").nan_to_num(0.0).float()


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Per-image Spearman rank correlation (ties get average ranks); 0 where a map is constant."""
    # torchmetrics correlates columns: pixels are the samples, images the outputs.
    rho = spearman_corrcoef(_flat(a).T.contiguous(), _flat(b).T.contiguous())
    return rho.reshape(-1).nan_to_num(0.0).float()


def topk_mask(maps: Tensor, fraction: float) -> Tensor:
    """Boolean (N, H*W) mask of each map's `fraction` most important pixels (at least one)."""
    flat = _flat(maps)
    k = max(1, round(fraction * flat.shape[1]))
    idx = flat.topk(k, dim=1).indices
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)


def topk_iou(a: Tensor, b: Tensor, fraction: float = 0.1) -> Tensor:
    """Per-image IoU of the top-`fraction` pixel sets of the two maps."""
    ma, mb = topk_mask(a, fraction), topk_mask(b, fraction)
    return ((ma & mb).sum(1) / (ma | mb).sum(1)).float()


def similarity_scores(a: Tensor, b: Tensor, topk_fraction: float = 0.1) -> dict[str, Tensor]:
    return {"cosine": cosine(a, b), "spearman": spearman(a, b), "topk_iou": topk_iou(a, b, topk_fraction)}


def summarize(values: Tensor, worst: int = 3) -> dict:
    """Mean, spread and the worst images (lowest scores) of one per-image score."""
    values = values.float()
    order = values.argsort()[:worst]
    return {
        "mean": float(values.mean()),
        "std": float(values.std()) if len(values) > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
        "worst": [{"index": int(i), "value": float(values[i])} for i in order],
    }


def closer_share(teacher_vs_kd: Tensor, teacher_vs_baseline: Tensor) -> float:
    """Share of images whose teacher map is closer to the KD student's than to the baseline's (ties: half)."""
    wins = (teacher_vs_kd > teacher_vs_baseline).float() + 0.5 * (teacher_vs_kd == teacher_vs_baseline).float()
    return float(wins.mean())

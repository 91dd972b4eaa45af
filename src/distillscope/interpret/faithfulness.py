"""Is a model's own map faithful? Deletion/insertion curves (Petsiuk et al. 2018, RISE) against random order.

Deletion: replace the most-attributed pixels by the baseline (0 in normalised space = the data mean) in
growing fractions and track the model's probability for the explained class; a faithful map makes it fall
faster than removing the same number of random pixels. Insertion starts from the baseline and adds the
most-attributed pixels first; faithful maps make it rise fast. Areas under the curves (trapezoid over the
fractions) summarise them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.4, 1.0)


def _ranks(maps: Tensor) -> Tensor:
    """Rank of each pixel in its own map: 0 = most attributed. (N, H*W)."""
    order = maps.reshape(maps.shape[0], -1).argsort(dim=1, descending=True)
    return order.argsort(dim=1)


def _masked(inputs: Tensor, ranks: Tensor, fractions, insert: bool) -> Tensor:
    """(len(fractions) * N, C, H, W): each image with its top-ranked pixels removed (or only those kept)."""
    n, pixels = ranks.shape
    batches = []
    for f in fractions:
        chosen = (ranks < round(f * pixels)).reshape(n, 1, *inputs.shape[-2:])
        batches.append(inputs * (chosen if insert else ~chosen))  # baseline 0 elsewhere, on every channel
    return torch.cat(batches)


def _auc(curve: Tensor, fractions) -> Tensor:
    return torch.trapezoid(curve, torch.tensor(fractions, dtype=curve.dtype), dim=0)


def deletion_insertion(
    model: nn.Module, inputs: Tensor, target: Tensor, maps: Tensor, fractions=FRACTIONS, seed: int = 0
) -> dict:
    """Per-image AUCs and the mean curves; `deletion_gain` = random AUC - deletion AUC (> 0: faithful)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    random_ranks = _ranks(torch.rand(maps.shape, generator=generator))
    ranks = _ranks(maps)
    # One forward for all curves and fractions: a few large batches are far cheaper than many small ones.
    batch = torch.cat([_masked(inputs, ranks, fractions, insert=False), _masked(inputs, random_ranks, fractions, insert=False),
                       _masked(inputs, ranks, fractions, insert=True)])
    with torch.no_grad():
        probs = model(batch).softmax(1).gather(1, target.repeat(3 * len(fractions))[:, None])
    deletion, random_deletion, insertion = probs.reshape(3, len(fractions), len(inputs)).unbind(0)
    del_auc, rnd_auc, ins_auc = (_auc(c, fractions) for c in (deletion, random_deletion, insertion))
    return {
        "fractions": list(fractions),
        "deletion_curve": deletion.mean(1).tolist(),
        "random_deletion_curve": random_deletion.mean(1).tolist(),
        "insertion_curve": insertion.mean(1).tolist(),
        "deletion_auc": float(del_auc.mean()),
        "random_deletion_auc": float(rnd_auc.mean()),
        "insertion_auc": float(ins_auc.mean()),
        "deletion_gain": float((rnd_auc - del_auc).mean()),
        "deletion_wins": float((del_auc < rnd_auc).float().mean()),
    }

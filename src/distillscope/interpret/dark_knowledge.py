"""Class similarity ("dark knowledge", Hinton et al. 2015): which wrong classes a model finds plausible.

Row c of the matrix is the model's mean softened prediction softmax(logits / T) over images of true class c.
The off-diagonal part is what KD transfers beyond the label; the Pearson correlation of the teacher's and the
student's off-diagonal entries says how much of it the student shares.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional import pearson_corrcoef


def class_similarity(logits: Tensor, targets: Tensor, num_classes: int, temperature: float = 1.0) -> Tensor:
    """(num_classes, num_classes) mean soft label per true class; rows of absent classes are NaN."""
    probs = (logits.float() / temperature).softmax(1)
    sums = torch.zeros(num_classes, num_classes).index_add_(0, targets, probs)
    counts = torch.bincount(targets, minlength=num_classes).float()[:, None]
    return sums / counts


def off_diagonal(matrix: Tensor) -> Tensor:
    mask = ~torch.eye(matrix.shape[0], dtype=torch.bool)
    return matrix[mask]


def off_diagonal_correlation(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two class-similarity matrices' off-diagonal entries (present classes only)."""
    x, y = off_diagonal(a), off_diagonal(b)
    present = ~(x.isnan() | y.isnan())
    return float(pearson_corrcoef(x[present], y[present]))

"""Soft decision tree (Frosst & Hinton 2017, "Distilling a Neural Network Into a Soft Decision Tree").

A complete binary tree of `depth` levels. Inner node i routes an image right with probability
sigmoid(beta * (w_i . x + b_i)): one learned filter per node, the size of the image, so every decision can be
looked at as a picture. Leaf l holds a learned class distribution Q_l. The prediction is the mixture of leaf
distributions weighted by the probability of reaching each leaf, returned as log-probabilities so it is a
drop-in student: softmax(log p) = p, and the KD/CE losses use it like any logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class SoftDecisionTree(nn.Module):
    def __init__(self, depth: int = 4, num_classes: int = 10, in_chans: int = 1, image_size: int = 32, **_: object):
        super().__init__()
        if depth < 1:
            raise ValueError(f"soft tree depth must be >= 1, got {depth}")
        self.depth, self.num_classes = depth, num_classes
        self.input_shape = (in_chans, image_size, image_size)
        num_inner, num_leaves = 2**depth - 1, 2**depth
        self.inner = nn.Linear(in_chans * image_size * image_size, num_inner)
        self.log_beta = nn.Parameter(torch.zeros(()))  # learned inverse temperature of the splits
        self.leaf_logits = nn.Parameter(torch.randn(num_leaves, num_classes) * 0.1)
        nn.init.normal_(self.inner.weight, std=0.01)
        nn.init.zeros_(self.inner.bias)

    def right_probability(self, x: Tensor) -> Tensor:
        """(N, num_inner) probability of taking the right branch at every inner node (breadth-first order)."""
        return torch.sigmoid(self.log_beta.exp() * self.inner(x.flatten(1)))

    def leaf_probability(self, x: Tensor) -> Tensor:
        """(N, num_leaves) probability of reaching each leaf: the product of the branch probabilities on its path."""
        right = self.right_probability(x)
        reach = x.new_ones(x.shape[0], 1)
        first = 0
        for level in range(self.depth):
            width = 2**level
            p = right[:, first:first + width]
            # Children of node j on the next level are 2j (left) and 2j+1 (right).
            reach = torch.stack([reach * (1 - p), reach * p], dim=2).reshape(x.shape[0], 2 * width)
            first += width
        return reach

    def forward(self, x: Tensor) -> Tensor:
        mixture = self.leaf_probability(x) @ self.leaf_logits.softmax(1)
        return mixture.clamp_min(1e-12).log()

    def filters(self) -> Tensor:
        """Inner-node filters as images, (num_inner, C, H, W)."""
        return self.inner.weight.detach().reshape(-1, *self.input_shape)

    def leaf_distributions(self) -> Tensor:
        return self.leaf_logits.detach().softmax(1)

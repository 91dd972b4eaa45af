"""Interpretable surrogates fitted to the teacher: a scikit-learn decision tree and a logistic regression.

Each is fitted on the training split three ways: to the true labels ("hard"), to the teacher's predicted
labels ("teacher labels") and to the teacher's soft labels at the run's temperature ("distilled"). On held-out data it reports accuracy (against labels) and fidelity (against the teacher).
Inputs are raw pixels for small images (digits) and the student's embeddings for larger ones.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier, export_text
from torch import Tensor, nn

PIXEL_LIMIT = 4096  # above this many input values, fit on embeddings instead of pixels


@torch.no_grad()
def embeddings(model: nn.Module, inputs: Tensor, batch_size: int = 256) -> Tensor:
    """Inputs of the model's last Linear layer (the pooled features the classifier sees)."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[Tensor] = []
    handle = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0].flatten(1)))
    try:
        model.eval()
        for start in range(0, len(inputs), batch_size):
            model(inputs[start:start + batch_size])
    finally:
        handle.remove()
    return torch.cat(captured)


def surrogate_features(inputs: Tensor, mode: str, model: nn.Module | None, pixel_size: int = 8) -> tuple[np.ndarray, str]:
    """Pixels average-pooled to `pixel_size` squared (digits are 8x8 at source: nothing is lost), or embeddings."""
    if mode == "auto":
        mode = "pixels" if inputs[0].numel() <= PIXEL_LIMIT or model is None else "embeddings"
    if mode == "embeddings":
        return embeddings(model, inputs).numpy(), mode
    # Fewer, coarser pixels keep the fits fast (seconds, not minutes) and the tree's splits readable.
    return torch.nn.functional.adaptive_avg_pool2d(inputs, pixel_size).flatten(1).numpy(), mode


def soft_label_rows(x: np.ndarray, probs: np.ndarray, min_prob: float = 1e-2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sample repeated once per class, weighted by the teacher's probability for it.

    Minimising weighted cross-entropy (logistic regression) or weighted impurity (a tree) on these rows is
    fitting the teacher's soft labels: the scikit-learn form of distillation.
    """
    rows, classes = np.nonzero(probs >= min_prob)
    return x[rows], classes, probs[rows, classes]


def fit_surrogates(
    train_x: np.ndarray,
    train_labels: np.ndarray,
    train_teacher_probs: np.ndarray,
    test_x: np.ndarray,
    test_labels: np.ndarray,
    test_teacher: np.ndarray,
    tree_max_depth: int = 8,
    seed: int = 0,
) -> dict:
    """Accuracy and fidelity of a tree and a logistic regression, on hard labels vs the teacher's soft labels."""
    results: dict = {}
    fits = {
        "hard": (train_x, train_labels, None),
        "teacher labels": (train_x, train_teacher_probs.argmax(1), None),
        "distilled": soft_label_rows(train_x, train_teacher_probs),
    }
    for fit_on, (x, y, weight) in fits.items():
        models = {
            "decision_tree": DecisionTreeClassifier(max_depth=tree_max_depth, random_state=seed),
            "logistic_regression": LogisticRegression(max_iter=200, C=0.1),
        }
        for name, model in models.items():
            model.fit(x, y, sample_weight=weight)
            pred = model.predict(test_x)
            row = {"fit_on": fit_on, "accuracy": float((pred == test_labels).mean()),
                   "fidelity": float((pred == test_teacher).mean())}
            if name == "decision_tree":
                row.update(depth=int(model.get_depth()), leaves=int(model.get_n_leaves()),
                           text=export_text(model, max_depth=4))
            results[f"{name} ({fit_on})"] = row
    return results

"""The report's figures (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import Tensor  # noqa: E402

DPI = 80


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # no tight bbox: the PNG is exactly figsize * DPI
    plt.close(fig)
    return path


def _image(x: Tensor) -> np.ndarray:
    """(C, H, W) normalised image -> displayable array scaled to [0, 1]."""
    img = x.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min() + 1e-8)
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def explanation_grid(
    images: Tensor, labels: list[str], maps: dict[str, Tensor], scores: dict[str, Tensor], title: str, path: Path
) -> Path:
    """Rows: image | teacher map | each student's map, with each student's similarity to the teacher written on it.

    `maps` is ordered with the teacher first; `scores[name]` is the per-image similarity of `name` to the teacher.
    """
    names = list(maps)
    rows, cols = len(images), 1 + len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(1.7 * cols, 1.7 * rows), squeeze=False, layout="constrained")
    for r in range(rows):
        axes[r, 0].imshow(_image(images[r]), cmap="gray")
        axes[r, 0].set_ylabel(labels[r], fontsize=8)
        for c, name in enumerate(names, start=1):
            axes[r, c].imshow(maps[name][r].cpu().numpy(), cmap="inferno")
            if name in scores:
                axes[r, c].set_xlabel(f"rho={float(scores[name][r]):.2f}", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    for c, name in enumerate(["image", *names]):
        axes[0, c].set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def heatmaps(matrices: dict[str, np.ndarray], title: str, path: Path, fmt: str | None = None, cmap: str = "viridis") -> Path:
    """One square heatmap per model, side by side (class-similarity matrices, confusion matrices)."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 3.9), squeeze=False, layout="constrained")
    for ax, (name, matrix) in zip(axes[0], matrices.items()):
        matrix = np.asarray(matrix, dtype=float)
        im = ax.imshow(matrix, cmap=cmap)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_xticks(range(matrix.shape[1]))
        ax.set_yticks(range(matrix.shape[0]))
        if fmt and matrix.shape[0] <= 12:
            for (i, j), v in np.ndenumerate(matrix):
                if not np.isnan(v):
                    ax.text(j, i, format(v, fmt).lstrip("0") or "0", ha="center", va="center", fontsize=5.5,
                            color="w" if v < np.nanmax(matrix) / 2 else "k")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def reliability_diagram(bins: dict[str, dict], eces: dict[str, float], path: Path) -> Path:
    """Accuracy against confidence per bin, one line per model; the diagonal is perfect calibration."""
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4, 4.6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True, layout="constrained")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    width = None
    for i, (name, b) in enumerate(bins.items()):
        conf, acc, share = (np.array(b[k], dtype=float) for k in ("confidence", "accuracy", "share"))
        edges = np.array(b["edges"])
        width = width or (edges[1] - edges[0])
        present = ~np.isnan(conf)
        ax.plot(conf[present], acc[present], "o-", ms=3, label=f"{name} (ECE {eces[name]:.3f})")
        hist.bar(edges[:-1] + width * (0.15 + 0.7 * i / max(1, len(bins))), share, width=0.7 * width / len(bins), align="edge", label=name)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("reliability (15 bins, test split)", fontsize=9)
    hist.set_xlabel("confidence")
    hist.set_ylabel("share")
    return _save(fig, path)


def curves(xs: list[float], lines: dict[str, list[float]], title: str, xlabel: str, ylabel: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.2, 3), layout="constrained")
    for name, ys in lines.items():
        ax.plot(xs, ys, "--" if "random" in name else "-", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    return _save(fig, path)


def stage_maps(images: Tensor, stages: dict[str, list[Tensor]], path: Path) -> Path:
    """Per-stage attention maps (mean squared activation over channels) of each model, one image per row."""
    rows = len(images)
    columns = [(name, i) for name, maps in stages.items() for i in range(len(maps))]
    fig, axes = plt.subplots(rows, 1 + len(columns), figsize=(1.5 * (1 + len(columns)), 1.5 * rows), squeeze=False, layout="constrained")
    for r in range(rows):
        axes[r, 0].imshow(_image(images[r]), cmap="gray")
        for c, (name, i) in enumerate(columns, start=1):
            axes[r, c].imshow(stages[name][i][r].cpu().numpy(), cmap="inferno")
            if r == 0:
                axes[r, c].set_title(f"{name}\nstage {i}", fontsize=7)
        for ax in axes[r]:
            ax.axis("off")
    return _save(fig, path)


def soft_tree(filters: Tensor, leaves: Tensor, class_names: list[str], path: Path) -> Path:
    """The tree drawn level by level: each inner node's filter as an image, each leaf's most likely class."""
    depth = int(math.log2(leaves.shape[0]))
    width = leaves.shape[0]
    fig = plt.figure(figsize=(max(6.0, 0.9 * width), 1.3 * (depth + 1)))
    node = 0
    for level in range(depth + 1):
        count = 2**level
        for j in range(count):
            left = (j + 0.5) / count - 0.4 / width
            # Rows top-down below a title band; each node centred over its subtree.
            ax = fig.add_axes([left, 0.9 * (1 - (level + 1) / (depth + 1)), 0.8 / width, 0.7 / (depth + 1)])
            ax.set_xticks([])
            ax.set_yticks([])
            if level < depth:
                f = filters[node].float()
                lim = float(f.abs().max()) + 1e-8
                ax.imshow((f[0] if f.shape[0] == 1 else f.mean(0)).numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
                node += 1
            else:
                dist = leaves[j]
                ax.bar(range(len(dist)), dist.numpy(), color="tab:blue")
                ax.set_ylim(0, 1)
                ax.set_title(class_names[int(dist.argmax())], fontsize=8)
    fig.suptitle("soft decision tree: inner-node filters (red routes right), leaf class distributions", fontsize=9, y=0.98)
    return _save(fig, path)

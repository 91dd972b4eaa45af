"""Interpretability pieces against hand-worked values: map similarity, Grad-CAM layers, faithfulness,
dark knowledge, fidelity details, the soft decision tree, surrogates, and the figures as PNG files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support
from torch import nn

from distillscope.errors import ConfigError
from distillscope.interpret import plots
from distillscope.interpret.attributions import attribute, find_gradcam_layer
from distillscope.interpret.dark_knowledge import class_similarity, off_diagonal_correlation
from distillscope.interpret.faithfulness import deletion_insertion
from distillscope.interpret.similarity import closer_share, cosine, spearman, summarize, topk_iou
from distillscope.interpret.soft_tree import SoftDecisionTree
from distillscope.interpret.surrogates import fit_surrogates, soft_label_rows
from distillscope.metrics import DetailMetrics, reliability_bins


# -- similarity ----------------------------------------------------------------------------------
def test_identical_maps_score_one():
    maps = torch.rand(3, 8, 8)
    for score in (cosine(maps, maps), spearman(maps, maps), topk_iou(maps, maps, 0.1)):
        assert torch.allclose(score, torch.ones(3), atol=1e-5)


def test_shuffled_maps_score_chance():
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(4, 64, 64, generator=generator)
    b = a.reshape(4, -1)[:, torch.randperm(64 * 64, generator=generator)].reshape(4, 64, 64)
    assert spearman(a, b).abs().max() < 0.06
    k = 0.1
    assert topk_iou(a, b, k).mean() == pytest.approx(k / (2 - k), abs=0.02)  # expected IoU of random sets
    centred = a - a.mean()
    assert cosine(centred, centred.reshape(4, -1)[:, torch.randperm(64 * 64, generator=generator)].reshape(4, 64, 64)).abs().max() < 0.06


def test_similarities_against_hand_worked_values():
    a = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    reversed_ = torch.tensor([[[4.0, 3.0, 2.0, 1.0]]])
    assert spearman(a, reversed_).item() == pytest.approx(-1.0)
    # Ranks 1,2,3,4 vs 1,3,2,4: rho = 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60 = 0.8
    assert spearman(a, torch.tensor([[[1.0, 3.0, 2.0, 4.0]]])).item() == pytest.approx(0.8)
    assert cosine(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[1.0, 1.0]]])).item() == pytest.approx(1 / math.sqrt(2))
    # Top half of [4,3,2,1] is pixels {0,1}; of [1,4,3,2] it is {1,2}: IoU = 1/3.
    assert topk_iou(torch.tensor([[[4.0, 3, 2, 1]]]), torch.tensor([[[1.0, 4, 3, 2]]]), 0.5).item() == pytest.approx(1 / 3)
    assert cosine(torch.zeros(1, 2, 2), torch.ones(1, 2, 2)).item() == 0.0  # an all-zero map matches nothing


def test_closer_share_and_summary():
    kd = torch.tensor([0.9, 0.2, 0.5, 0.7])
    base = torch.tensor([0.1, 0.8, 0.5, 0.3])
    assert closer_share(kd, base) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    s = summarize(torch.tensor([0.5, -0.2, 0.9, 0.1]), worst=2)
    assert [w["index"] for w in s["worst"]] == [1, 3]
    assert s["mean"] == pytest.approx(0.325)
    assert s["std"] == pytest.approx(np.std([0.5, -0.2, 0.9, 0.1], ddof=1), rel=1e-5)


# -- Grad-CAM layer discovery --------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, last_stage, stage_at_32",
    [
        ("resnet18", "layer4", "layer2"),                  # layer4 is 1x1 on 32x32 inputs, layer2 is 4x4
        ("mobilenetv3_small_050", "blocks.5", "blocks.1"),
        ("efficientnet_b0", "blocks.6", "blocks.2"),
        ("convnext_atto", "stages.3", "stages.1"),
        ("cifar_resnet8", "stages.2", "stages.2"),         # the project's CIFAR ResNets keep 8x8 at the end
        ("cifar_resnet32x4", "stages.2", "stages.2"),
    ],
)
def test_gradcam_layer_discovery(name, last_stage, stage_at_32):
    import distillscope.models  # noqa: F401  (registers cifar_* with timm)

    model = timm.create_model(name, num_classes=10, pretrained=False)
    assert find_gradcam_layer(model) == last_stage
    assert find_gradcam_layer(model, image_size=32) == stage_at_32


def test_gradcam_layer_falls_back_to_last_conv():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    assert find_gradcam_layer(model) == "2"
    with pytest.raises(ConfigError, match="explain.gradcam_layer"):
        find_gradcam_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients", "saliency"])
def test_attribution_maps_have_input_resolution(method):
    model = timm.create_model("cifar_resnet8", num_classes=10, in_chans=1)
    maps = attribute(model, torch.randn(3, 1, 32, 32), torch.tensor([0, 1, 2]), method, ig_steps=2)
    assert maps.shape == (3, 32, 32)
    assert (maps >= 0).all()
    if method != "gradcam":  # ReLU-ed Grad-CAM of an untrained net may be all zero
        assert maps.flatten(1).sum(1).gt(0).all()


def test_saliency_finds_the_only_pixel_that_matters():
    # Class 1's logit reads pixel (2, 3) alone: saliency must peak there.
    linear = nn.Linear(16, 2, bias=False)
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[1, 2 * 4 + 3] = 5.0
    model = nn.Sequential(nn.Flatten(), linear)
    maps = attribute(model, torch.randn(2, 1, 4, 4), torch.tensor([1, 1]), "saliency")
    assert maps.flatten(1).argmax(1).tolist() == [11, 11]


# -- faithfulness --------------------------------------------------------------------------------
def test_deletion_beats_random_for_a_true_map():
    # Logit of class 0 = 10 * sum of the 4 "key" pixels; class 1's logit is 0. The true map marks the key pixels.
    key = torch.zeros(8, 8, dtype=torch.bool)
    key[2:4, 2:4] = True
    weight = torch.zeros(2, 64)
    weight[0, key.flatten()] = 10.0
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2, bias=False))
    model[1].weight.data = weight
    inputs = torch.ones(5, 1, 8, 8)
    maps = key.float().expand(5, 8, 8)
    result = deletion_insertion(model, inputs, torch.zeros(5, dtype=torch.long), maps, fractions=(0.0, 0.0625, 0.5, 1.0))
    # Removing the top 4/64 pixels removes every key pixel: p(class 0) drops from sigmoid(40) to 1/2.
    assert result["deletion_curve"][0] == pytest.approx(1.0)
    assert result["deletion_curve"][1] == pytest.approx(0.5)
    assert result["insertion_curve"][1] == pytest.approx(1.0)
    assert result["deletion_auc"] < result["random_deletion_auc"]
    assert result["deletion_gain"] > 0 and result["deletion_wins"] == 1.0


# -- dark knowledge ------------------------------------------------------------------------------
def test_class_similarity_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    targets = torch.tensor([0, 0, 1])
    sim = class_similarity(logits, targets, 3, temperature=2.0)
    e = math.e
    row0 = (np.array([1 / 3, 1 / 3, 1 / 3]) + np.array([e, 1, 1]) / (e + 2)) / 2  # softmax([2,0,0]/2)
    row1 = np.array([1, e**2, 1]) / (e**2 + 2)
    assert np.allclose(sim[0].numpy(), row0, atol=1e-6)
    assert np.allclose(sim[1].numpy(), row1, atol=1e-6)
    assert sim[2].isnan().all()  # class 2 absent
    other = class_similarity(logits * 0.5, targets, 3, temperature=2.0)
    assert off_diagonal_correlation(sim, sim) == pytest.approx(1.0)
    expected = np.corrcoef(sim[:2].numpy()[~np.eye(3, dtype=bool)[:2]], other[:2].numpy()[~np.eye(3, dtype=bool)[:2]])[0, 1]
    assert off_diagonal_correlation(sim, other) == pytest.approx(expected, abs=1e-5)


# -- fidelity details ----------------------------------------------------------------------------
def test_detail_metrics_match_sklearn_and_hand_counts():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 4, generator=generator)
    targets = torch.randint(0, 4, (40,), generator=generator)
    details = DetailMetrics(4)
    details.update(logits[:25], targets[:25])
    details.update(logits[25:], targets[25:])
    out = details.compute()
    pred = logits.argmax(1).numpy()
    confusion = np.zeros((4, 4))
    np.add.at(confusion, (targets.numpy(), pred), 1)
    assert np.array_equal(np.array(out["confusion_matrix"]), confusion)
    p, r, f, support = precision_recall_fscore_support(targets.numpy(), pred, labels=range(4), zero_division=0)
    assert np.allclose(out["per_class"]["precision"], p, atol=1e-6)
    assert np.allclose(out["per_class"]["recall"], r, atol=1e-6)
    assert np.allclose(out["per_class"]["f1"], f, atol=1e-6)
    assert out["per_class"]["support"] == support.tolist()
    # ECE recomputed from the reliability bins equals torchmetrics' ECE.
    bins = out["reliability"]
    ece = sum(s * abs(a - c) for s, a, c in zip(bins["share"], bins["accuracy"], bins["confidence"]) if s > 0)
    assert ece == pytest.approx(out["ece"], abs=1e-5)


def test_reliability_bins_by_hand():
    conf = torch.tensor([0.95, 0.97, 0.55, 0.05])
    correct = torch.tensor([1.0, 0.0, 1.0, 0.0])
    bins = reliability_bins(conf, correct, n_bins=10)
    assert bins["share"][9] == 0.5 and bins["accuracy"][9] == 0.5
    assert bins["confidence"][9] == pytest.approx(0.96)
    assert bins["share"][5] == 0.25 and bins["accuracy"][5] == 1.0
    assert bins["share"][0] == 0.25 and math.isnan(bins["accuracy"][3])


# -- interpretable students ----------------------------------------------------------------------
def test_soft_tree_depth_one_by_hand():
    tree = SoftDecisionTree(depth=1, num_classes=2, in_chans=1, image_size=2)
    with torch.no_grad():
        tree.inner.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
        tree.inner.bias.zero_()
        tree.leaf_logits.copy_(torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    x = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    p_right = 1 / (1 + math.exp(-1.0))  # beta = exp(0) = 1
    q_left, q_right = np.array([math.e**2, 1]) / (math.e**2 + 1), np.array([1, math.e**2]) / (math.e**2 + 1)
    expected = (1 - p_right) * q_left + p_right * q_right
    assert np.allclose(tree(x).exp().detach().numpy()[0], expected, atol=1e-6)
    assert tree.filters().shape == (1, 1, 2, 2)


def test_soft_tree_leaf_probabilities_sum_to_one():
    tree = SoftDecisionTree(depth=3, num_classes=10, in_chans=1, image_size=8)
    reach = tree.leaf_probability(torch.randn(5, 1, 8, 8))
    assert reach.shape == (5, 8)
    assert torch.allclose(reach.sum(1), torch.ones(5))


def test_surrogates_fidelity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    labels = (x[:, 0] > 0).astype(int)
    teacher = (x[:, 1] > 0).astype(int)  # a "teacher" that disagrees with the labels: fidelity != accuracy
    probs = np.stack([1 - teacher, teacher], 1) * 0.9 + 0.05
    out = fit_surrogates(x[:200], labels[:200], probs[:200], x[200:], labels[200:], teacher[200:], tree_max_depth=2)
    assert out["decision_tree (hard)"]["accuracy"] > 0.9 and out["decision_tree (hard)"]["fidelity"] < 0.75
    assert out["decision_tree (distilled)"]["fidelity"] > 0.9
    assert out["logistic_regression (teacher labels)"]["fidelity"] > 0.9
    assert out["decision_tree (hard)"]["depth"] <= 2 and "feature_0" in out["decision_tree (hard)"]["text"]
    rows, classes, weights = soft_label_rows(x[:2], np.array([[0.7, 0.3], [1.0, 0.0]]))
    assert classes.tolist() == [0, 1, 0] and weights.tolist() == [0.7, 0.3, 1.0] and len(rows) == 3


# -- figures -------------------------------------------------------------------------------------
def test_figures_are_pngs_of_the_expected_size(tmp_path):
    images, maps = torch.rand(3, 1, 8, 8), {"teacher": torch.rand(3, 8, 8), "student": torch.rand(3, 8, 8)}
    grid = plots.explanation_grid(images, ["0", "1", "2"], maps, {"student": torch.rand(3)}, "t", tmp_path / "grid.png")
    heat = plots.heatmaps({"a": np.eye(3), "b": np.ones((3, 3))}, "t", tmp_path / "heat.png", fmt=".1f")
    bins = reliability_bins(torch.rand(50), torch.randint(0, 2, (50,)))
    rel = plots.reliability_diagram({"m": bins}, {"m": 0.1}, tmp_path / "rel.png")
    tree = SoftDecisionTree(depth=2, num_classes=3, in_chans=1, image_size=4)
    soft = plots.soft_tree(tree.filters(), tree.leaf_distributions(), ["a", "b", "c"], tmp_path / "tree.png")
    dpi = plots.DPI
    expected = {grid: (1.7 * 3 * dpi, 1.7 * 3 * dpi), heat: (4.2 * 2 * dpi, 3.9 * dpi), rel: (4 * dpi, 4.6 * dpi), soft: (6 * dpi, 3.9 * dpi)}
    for path, (width, height) in expected.items():
        with Image.open(path) as img:
            assert img.format == "PNG"
            assert img.size == (round(width), round(height))

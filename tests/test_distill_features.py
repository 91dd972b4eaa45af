"""Feature, relational, contrastive and gradient methods: each loss against its paper's formula written
out here by hand (plain Python or explicit tensor algebra), gradient flow, and real runs."""

import csv
import math

import pytest
import torch
from torch import nn

from conftest import FAST, cifar_overrides, kd_overrides, run_cli, tiny_run
from distillscope.distill import (
    ATLoss, CELoss, CRDLoss, DistillOutputs, FitNetLoss, InputGradLoss, MGDLoss, PKTLoss, RKDLoss, SPLoss, VIDLoss,
)
from distillscope.errors import ConfigError
from distillscope.models import create_model
from distillscope.models.cifar_resnet import CifarResNet
from distillscope.module import DistillationModule

METHODS = {"fitnet": FitNetLoss, "at": ATLoss, "pkt": PKTLoss, "sp": SPLoss, "rkd": RKDLoss, "crd": CRDLoss,
           "vid": VIDLoss, "mgd": MGDLoss, "input_grad": InputGradLoss}
FEATURE_METHODS = {k: v for k, v in METHODS.items() if k != "input_grad"}


def feats_outputs(s: torch.Tensor, t: torch.Tensor, **extra) -> DistillOutputs:
    """Outputs with one student and one teacher feature under the taps 's' and 't'."""
    return DistillOutputs(student_logits=torch.zeros(len(s), 2), targets=torch.zeros(len(s), dtype=torch.long),
                          student_feats={"s": s}, teacher_feats={"t": t}, **extra)


def built(cls, s, t, **kwargs):
    num_train_samples = kwargs.pop("num_train_samples", None)
    loss = cls(student_taps=["s"], teacher_taps=["t"], **kwargs)
    loss.setup(feats_outputs(s, t, num_train_samples=num_train_samples))
    return loss


def huber(a, b):
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def dist(u, v):
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v)))


def cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / (math.hypot(*u) * math.hypot(*v))


# -- each loss against its formula -----------------------------------------------------------------

def test_at_hand_worked_with_pooling():
    # Student 2x2 map, one channel [[1,2],[3,4]] -> attention (1,4,9,16)/sqrt(354).
    # Teacher 4x4, two channels of ones -> pooled to 2x2 ones -> attention (1,1,1,1)/2.
    s = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    t = torch.ones(1, 2, 4, 4)
    q_s = [v / math.sqrt(354) for v in (1, 4, 9, 16)]
    expected = sum((a - 0.5) ** 2 for a in q_s) / 4
    assert ATLoss(["s"], ["t"])(feats_outputs(s, t)).item() == pytest.approx(expected, rel=1e-6)


def test_fitnet_is_mse_of_regressed_student_hint():
    torch.manual_seed(0)
    s, t = torch.randn(3, 2, 4, 4), torch.randn(3, 3, 2, 2)
    loss = built(FitNetLoss, s, t).eval()  # eval: batch norm uses its initial running stats (0, 1)
    w = torch.tensor([[1.0, 2.0], [0.0, -1.0], [0.5, 0.5]])
    loss.regressors[0][0].weight.data = w.view(3, 2, 1, 1)
    pooled = s.view(3, 2, 2, 2, 2, 2).mean(dim=(3, 5))  # 4x4 -> 2x2 block means
    regressed = torch.einsum("oc,bchw->bohw", w, pooled) / math.sqrt(1 + 1e-5)
    expected = ((regressed - t) ** 2).mean()
    assert loss(feats_outputs(s, t)).item() == pytest.approx(expected.item(), rel=1e-5)


def test_pkt_matches_probability_formula():
    s = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    t = [[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]

    def probs(rows):
        sims = [[(cos(a, b) + 1) / 2 for b in rows] for a in rows]
        return [[v / sum(r) for v in r] for r in sims]

    p_s, p_t = probs(s), probs(t)
    expected = sum(pt * math.log(pt / ps) for rs, rt in zip(p_s, p_t) for ps, pt in zip(rs, rt)) / 9
    got = PKTLoss(["s"], ["t"], eps=0.0)(feats_outputs(torch.tensor(s), torch.tensor(t)))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_sp_matches_gram_formula():
    s = [[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]]
    t = [[1.0, 0.0, 1.0], [2.0, 2.0, 0.0], [0.0, 1.0, 1.0]]

    def gram(rows):
        g = [[sum(a * b for a, b in zip(u, v)) for v in rows] for u in rows]
        return [[v / math.hypot(*r) for v in r] for r in g]

    g_s, g_t = gram(s), gram(t)
    expected = sum((a - b) ** 2 for rs, rt in zip(g_s, g_t) for a, b in zip(rs, rt)) / 9
    # The student is a (3, 1, 1, 2) map: SP flattens whatever it is given.
    got = SPLoss(["s"], ["t"])(feats_outputs(torch.tensor(s).view(3, 1, 1, 2), torch.tensor(t)))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_rkd_distance_and_angle_match_paper():
    s = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]
    t = [[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [2.0, 0.0, 0.0]]
    n = range(3)

    def distances(e):
        d = [[dist(e[i], e[j]) for j in n] for i in n]
        mu = sum(d[i][j] for i in n for j in n if i != j) / 6
        return [d[i][j] / mu for i in n for j in n]

    def angles(e):
        out = []
        for j in n:
            for i in n:
                for k in n:
                    u = [a - b for a, b in zip(e[i], e[j])]
                    v = [a - b for a, b in zip(e[k], e[j])]
                    out.append(cos(u, v) if any(u) and any(v) else 0.0)
        return out

    dist_term = sum(huber(a, b) for a, b in zip(distances(s), distances(t))) / 9
    angle_term = sum(huber(a, b) for a, b in zip(angles(s), angles(t))) / 27
    outputs = feats_outputs(torch.tensor(s), torch.tensor(t))
    assert RKDLoss(["s"], ["t"], angle_weight=0)(outputs).item() == pytest.approx(25 * dist_term, rel=1e-5)
    assert RKDLoss(["s"], ["t"], distance_weight=0)(outputs).item() == pytest.approx(50 * angle_term, rel=1e-5)
    assert RKDLoss(["s"], ["t"])(outputs).item() == pytest.approx(25 * dist_term + 50 * angle_term, rel=1e-5)


def test_vid_is_gaussian_nll_with_initial_variance():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 4, 2, 2)
    loss = built(VIDLoss, s, t, init_variance=5.0)
    last = loss.regressors[0].mean[-1]
    nn.init.zeros_(last.weight)
    last.bias.data = torch.tensor([0.0, 1.0, -1.0, 2.0])  # predicted mean: the bias, whatever the student
    mean = last.bias.view(1, 4, 1, 1)
    expected = 0.5 * ((t - mean) ** 2 / 5.0 + math.log(5.0)).mean()
    assert loss(feats_outputs(s, t)).item() == pytest.approx(expected.item(), rel=1e-5)


def identity_generator(loss: MGDLoss, channels: int) -> None:
    """Make the generator the identity on non-negative maps (centre taps of both 3x3 convs)."""
    for conv in (loss.generators[0][0], loss.generators[0][2]):
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        conv.weight.data[range(channels), range(channels), 1, 1] = 1.0


def test_mgd_reconstructs_from_channel_masked_student():
    torch.manual_seed(0)
    s, t = torch.rand(4, 5, 3, 3), torch.rand(4, 5, 3, 3)
    loss = built(MGDLoss, s, t, mask_ratio=0.0)
    assert isinstance(loss.aligners[0], nn.Identity)  # same width: no aligner, as in the paper's code
    identity_generator(loss, 5)
    assert loss(feats_outputs(s, t)).item() == pytest.approx(((s - t) ** 2).sum().item() / 4, rel=1e-5)

    loss.mask_ratio = 0.5
    torch.manual_seed(7)
    keep = (torch.rand(4, 5, 1, 1) >= 0.5).float()
    torch.manual_seed(7)
    got = loss(feats_outputs(s, t)).item()
    assert 0 < keep.mean() < 1
    assert got == pytest.approx(((s * keep - t) ** 2).sum().item() / 4, rel=1e-5)


def test_mgd_aligns_channels_with_a_1x1_conv():
    loss = built(MGDLoss, torch.rand(2, 3, 4, 4), torch.rand(2, 6, 2, 2))
    assert isinstance(loss.aligners[0], nn.Conv2d) and loss.aligners[0].weight.shape == (6, 3, 1, 1)


def test_input_grad_matches_normalised_weight_rows_of_linear_models():
    # For a linear model the input gradient of class y's score is row y of its weight matrix.
    torch.manual_seed(0)
    student, teacher = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    teacher.requires_grad_(False)
    x, y = torch.randn(5, 1, 2, 2), torch.tensor([0, 1, 2, 1, 0])
    outputs = DistillOutputs(student_logits=student(x), targets=y, inputs=x, student=student, teacher=teacher)
    w_s, w_t = student[1].weight.detach(), teacher[1].weight
    expected = 0.0
    for label in y.tolist():
        a = [v / math.hypot(*w_s[label].tolist()) for v in w_s[label].tolist()]
        b = [v / math.hypot(*w_t[label].tolist()) for v in w_t[label].tolist()]
        expected += sum((p - q) ** 2 for p, q in zip(a, b)) / len(y)
    loss = InputGradLoss()(outputs)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()  # double backprop: the gradient-matching loss reaches the student's weights
    assert student[1].weight.grad.abs().sum() > 0


# -- CRD: memory bank and indices ------------------------------------------------------------------

def make_crd(n=10, k=4, dim=3, momentum=0.5):
    torch.manual_seed(0)
    s, t = torch.randn(2, 6), torch.randn(2, 5)
    return built(CRDLoss, s, t, feat_dim=dim, num_negatives=k, momentum=momentum, num_train_samples=n), s, t


def test_crd_nce_matches_formula_and_updates_memory_rows():
    loss, s, t = make_crd()
    index = torch.tensor([3, 7])
    contrast = torch.tensor([[3, 0, 1, 2, 9], [7, 5, 5, 8, 0]])
    loss.sample_contrast = lambda idx: contrast
    mem_s, mem_t = loss.memory_student.clone(), loss.memory_teacher.clone()
    with torch.no_grad():
        v_s = nn.functional.normalize(loss.embed_student(s), dim=1)
        v_t = nn.functional.normalize(loss.embed_teacher(t), dim=1)

    def nce(memory, v):
        scores = torch.stack([torch.exp(memory[c] @ v[i] / 0.07) for i, c in enumerate(contrast)])
        scores = scores / (scores.mean() * 10)  # Z = mean score x N on the first batch
        noise = 4 / 10  # K * P_n
        total = 0.0
        for row in scores.tolist():
            total += math.log(row[0] / (row[0] + noise + 1e-7))
            total += sum(math.log(noise / (x + noise + 1e-7)) for x in row[1:])
        return -total / 2

    expected = nce(mem_t, v_s) + nce(mem_s, v_t)
    got = loss(feats_outputs(s, t, index=index))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    for memory, old, v in ((loss.memory_student, mem_s, v_s), (loss.memory_teacher, mem_t, v_t)):
        want = nn.functional.normalize(0.5 * old[index] + 0.5 * v, dim=1)
        torch.testing.assert_close(memory[index], want)
        others = [i for i in range(10) if i not in (3, 7)]
        torch.testing.assert_close(memory[others], old[others])  # untouched rows stay as they were
    z = loss.z_student.item()
    loss(feats_outputs(s, t, index=index))
    assert loss.z_student.item() == z  # Z is fixed after the first batch


def test_crd_negatives_exclude_the_positive_and_stay_in_range():
    loss, _, _ = make_crd(n=6, k=50)
    assert loss.num_negatives == 5  # capped at N - 1
    index = torch.tensor([0, 5, 2])
    contrast = loss.sample_contrast(index)
    assert contrast.shape == (3, 6)
    assert contrast[:, 0].tolist() == [0, 5, 2]
    for row, i in zip(contrast[:, 1:], index):
        assert int(i) not in row.tolist() and row.min() >= 0 and row.max() < 6
    with pytest.raises(ValueError, match="indices"):
        loss(feats_outputs(torch.randn(1, 6), torch.randn(1, 5), index=torch.tensor([6])))


def test_crd_bank_is_saved_with_the_state_dict():
    loss, _, _ = make_crd()
    state = loss.state_dict()
    assert state["memory_student"].shape == (10, 3) and "z_teacher" in state


# -- taps configuration ----------------------------------------------------------------------------

def test_unpaired_taps_name_the_key():
    assert FitNetLoss(student_taps=2, teacher_taps="layer1").teacher_taps == ["layer1"]  # a bare tap is a list of one
    with pytest.raises(ConfigError, match=r"distill\.fitnet\.teacher_taps.*paired"):
        FitNetLoss(student_taps=[1, 2], teacher_taps=[1])
    with pytest.raises(ConfigError, match=r"distill\.crd\.student_taps"):
        CRDLoss(student_taps=[1, 2], teacher_taps=[1, 2])


def test_feature_shape_a_method_cannot_use_names_the_key():
    with pytest.raises(ConfigError, match=r"distill\.at\.student_taps.*\(B, C, H, W\)"):
        built(ATLoss, torch.randn(2, 3), torch.randn(2, 3, 2, 2))


# -- gradients: student and adapters, never the frozen teacher ---------------------------------------

@pytest.mark.parametrize("name", METHODS)
def test_gradients_reach_student_and_adapters_never_teacher(name):
    torch.manual_seed(0)
    student = create_model("cifar_resnet8", num_classes=10, in_chans=1)
    teacher = CifarResNet(8, (8, 24, 48, 96), num_classes=10, in_chans=1)  # other widths: adapters needed
    term = METHODS[name]()
    module = DistillationModule(student, {"ce": CELoss(), name: term}, num_classes=10, teacher=teacher)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    module.prepare((x, y, torch.arange(6)), num_train_samples=20)
    module.train()
    loss = term(module.compute_outputs((x, y, torch.arange(6))))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert student.stem[0].weight.grad.abs().sum() > 0  # reaches the student's first layer
    adapters = [p for p in term.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters)
    assert {id(p) for p in adapters} <= {id(p) for p in module.trainable_parameters()}
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())


# -- real runs -------------------------------------------------------------------------------------

def cli_run(tmp_path, *overrides):
    """A tiny real CLI run (no report); returns its run directory."""
    run_dir = tmp_path / "run"
    args = [*FAST, "report.enabled=false", *overrides, f"hydra.run.dir={run_dir}", f"paths.artifacts_dir={tmp_path}"]
    result = run_cli(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def read_metric_columns(run_dir):
    with open(next(run_dir.rglob("metrics.csv"))) as fh:
        return set(csv.DictReader(fh).fieldnames)


def test_all_feature_methods_combine_from_the_cli(teacher_ckpt, tmp_path):
    """One real CLI run on digits with every method at once; each term logged under its own name and
    the adapters saved in the checkpoint."""
    run_dir = cli_run(tmp_path, *kd_overrides(teacher_ckpt, f"distill=[{','.join(METHODS)}]"))
    columns = read_metric_columns(run_dir)
    for name in ["ce", *METHODS]:
        assert f"train/loss_{name}" in columns
    state = torch.load(next(run_dir.rglob("last.ckpt")), map_location="cpu", weights_only=False)["state_dict"]
    for key in ("losses.fitnet.regressors.0.0.weight", "losses.vid.regressors.0.raw_variance",
                "losses.mgd.generators.0.0.weight", "losses.crd.memory_student"):
        assert key in state
    assert not any(k.startswith("teacher.") for k in state)


def test_cli_wrong_tap_path_is_one_line_naming_the_key(teacher_ckpt, tmp_path):
    result = run_cli([*kd_overrides(teacher_ckpt, "distill=fitnet", "distill.fitnet.student_taps=[stages.9]"),
                      "logger=none", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("distillscope: error:")]
    assert len(errors) == 1
    assert "distill.fitnet.student_taps: no module 'stages.9'" in errors[0]
    assert "stages.0" in errors[0]  # the valid names are listed


def test_all_feature_methods_train_on_cifar_shaped_data(fake_cifar100, tmp_path):
    overrides = cifar_overrides(
        fake_cifar100, "teacher=timm", "teacher.name=cifar_resnet8", "student=cifar_resnet8",
        f"distill=[{','.join(METHODS)}]", "data.batch_size=16", "report.enabled=false",
    )
    metrics, _ = tiny_run(tmp_path, *overrides)
    for name in METHODS:
        assert math.isfinite(metrics[f"train/loss_{name}"])
    assert 0.0 <= metrics["test/acc"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_each_method_runs_from_the_cli_on_digits(name, teacher_ckpt, tmp_path):
    run_dir = cli_run(tmp_path, *kd_overrides(teacher_ckpt, f"distill={name}"))
    assert f"train/loss_{name}" in read_metric_columns(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_each_method_trains_on_cifar_shaped_data(name, fake_cifar100, tmp_path):
    overrides = cifar_overrides(fake_cifar100, "teacher=timm", "teacher.name=cifar_resnet8x4",
                                "student=cifar_resnet8", f"distill={name}", "data.batch_size=16")
    metrics, _ = tiny_run(tmp_path, *overrides)
    assert math.isfinite(metrics[f"train/loss_{name}"])

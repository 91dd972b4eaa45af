"""Deep mutual learning: the cohort loss by hand, gradients per model, every model's metrics logged
and every model reloadable from the checkpoint (real CLI run), CIFAR-shaped data, config errors."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from conftest import cifar_overrides, run_cli, tiny_run
from distillscope.distill import CELoss, KDLoss
from distillscope.errors import ConfigError
from distillscope.mutual import MutualModule, load_cohort_member

# Unit tests call training_step without a Trainer; Lightning then warns that self.log() goes nowhere.
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")

LINEAR = {"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 3}


def cohort(temperature: float = 1.0, n_peers: int = 1) -> MutualModule:
    torch.manual_seed(0)
    return MutualModule(
        student=torch.nn.Linear(4, 3),
        losses={"ce": CELoss(1.0), "kd": KDLoss(1.0, temperature=temperature)},
        num_classes=3,
        peers={f"p{i}": LINEAR for i in range(n_peers)},
    )


def log_softmax(row):
    lse = math.log(sum(math.exp(v) for v in row))
    return [v - lse for v in row]


def dml_loss_by_hand(own, others, y):
    """CE(own) + mean over the others of KL(p_other || p_own), T=1 (Zhang et al. 2018, eq. 2)."""
    total = 0.0
    for b, target in enumerate(y):
        lp = log_softmax(own[b])
        ce = -lp[target]
        kls = []
        for other in others:
            lq = log_softmax(other[b])
            kls.append(sum(math.exp(q) * (q - p) for q, p in zip(lq, lp)))
        total += ce + sum(kls) / len(kls)
    return total / len(y)


@pytest.mark.parametrize("n_peers", [1, 2])
def test_cohort_loss_matches_deep_mutual_learning(n_peers):
    module = cohort(n_peers=n_peers)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    logits = {name: model(x).tolist() for name, model in module.cohort().items()}
    expected = sum(
        dml_loss_by_hand(own, [o for n, o in logits.items() if n != name], y.tolist()) for name, own in logits.items()
    )
    loss = module.training_step((x, y, torch.arange(5)), 0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_each_model_gets_gradients_only_from_its_own_loss():
    module = cohort()
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    student_logits, peer_logits = module.student(x), module.peers["p0"](x)
    module.model_loss("student", student_logits, [peer_logits.detach()], y).backward()
    assert module.student.weight.grad.abs().sum() > 0
    assert module.peers["p0"].weight.grad is None  # the peer is the student's target, not trained by its loss
    module.zero_grad()
    module.training_step((x, y, torch.arange(5)), 0).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"teacher": torch.nn.Linear(4, 3)}, "teacher"), ({"peers": {}}, "module.peers"),
     ({"peers": {"student": LINEAR}}, "module.peers.student")],
)
def test_bad_cohort_config_is_one_config_error(kwargs, key):
    args = {"student": torch.nn.Linear(4, 3), "losses": {"ce": CELoss()}, "num_classes": 3, "peers": {"p": LINEAR}}
    with pytest.raises(ConfigError, match=key):
        MutualModule(**{**args, **kwargs})


def test_mutual_cli_logs_and_checkpoints_every_model(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        ["experiment=digits_mutual", "logger=csv", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false",
         "report.latency_repeats=1", f"hydra.run.dir={run_dir}", f"paths.artifacts_dir={tmp_path}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(next(run_dir.rglob("metrics.csv"))) as fh:
        logged = {k for row in csv.DictReader(fh) for k, v in row.items() if v}
    for stage in ("val", "test"):
        assert {f"{stage}/acc", f"{stage}/peer/acc", f"{stage}/peer/f1", f"{stage}/peer/agreement"} <= logged
    assert {"train/loss_kd", "train/loss_ce", "train/peer/loss_kd", "train/peer/loss_ce"} <= logged

    ckpt = str(next((run_dir / "checkpoints").glob("epoch_*.ckpt")))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    student, peer = load_cohort_member(ckpt), load_cohort_member(ckpt, "peer")
    # The peer is the deeper ResNet-14 the experiment configures, with its trained weights.
    assert sum(p.numel() for p in peer.parameters()) > sum(p.numel() for p in student.parameters())
    assert torch.equal(peer.fc.weight, state["peers.peer.fc.weight"])
    assert torch.equal(student.fc.weight, state["student.fc.weight"])
    with pytest.raises(ConfigError, match="no peer 'nobody'"):
        load_cohort_member(ckpt, "nobody")


def test_mutual_on_cifar_shaped_data(fake_cifar100, tmp_path):
    metrics, _ = tiny_run(tmp_path, *cifar_overrides(fake_cifar100, "experiment=digits_mutual", "distill=[kd,dkd]", "data.batch_size=16"))
    assert {"test/acc", "test/peer/acc", "train/peer/loss_dkd"} <= set(metrics)

"""End to end: the real CLI trains a teacher then distils it; determinism; resume; run records."""

import csv
import json

import pytest
import torch

from conftest import ROOT, kd_overrides, run_cli, tiny_run

TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false", "report.latency_repeats=2"]


def test_cli_teacher_then_kd_student_with_report(tmp_path):
    teacher = run_cli(["experiment=digits_teacher", "student=cifar_resnet8", "logger=csv", *TINY,
                       f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/teacher_run"], cwd=ROOT)
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    assert (tmp_path / "artifacts" / "digits_teacher.ckpt").is_file()

    # The default logger: W&B, offline with no account, plus CSV.
    kd = run_cli(["experiment=digits_kd", *TINY, f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/kd_run"], cwd=ROOT)
    assert kd.returncode == 0, kd.stderr[-3000:]
    run_dir = tmp_path / "kd_run"
    report = json.loads((run_dir / "report.json").read_text())
    teacher_row, student_row = report["models"]["teacher"], report["models"]["student (KD)"]
    for row in (teacher_row, student_row):
        for key in ("test/acc", "test/f1", "test/ece"):
            assert 0.0 <= row[key] <= 1.0
        assert row["params"] > 0 and row["checkpoint_mb"] > 0 and row["latency_ms_b1"] > 0 and row["latency_ms_b64"] > 0
    assert teacher_row["params"] == student_row["params"] == 77754  # both cifar_resnet8 here
    assert 0.0 <= report["pair"]["test/agreement"] <= 1.0 and report["pair"]["test/kl"] >= 0.0
    assert "| student (KD) |" in kd.stdout and "| teacher |" in kd.stdout
    assert "make baseline" in (run_dir / "report.md").read_text()  # the baseline is missing: say how to add it
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline W&B run"
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert any(r.get("val/agreement") for r in rows) and any(r.get("train/loss_kd") for r in rows)
    ckpts = list((run_dir / "checkpoints").glob("*.ckpt"))
    assert ckpts and all(not any(k.startswith("teacher.") for k in torch.load(c, weights_only=False)["state_dict"]) for c in ckpts)

    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "finished" and record["finished"]
    assert record["packages"]["torch"] and record["packages"]["lightning"]
    assert record["config"]["distill"]["kd"]["temperature"] == 4.0
    assert "experiment=digits_kd" in record["command"]
    assert set(record["git"]) == {"commit", "dirty"}


def test_deterministic_runs_are_identical(tmp_path, teacher_ckpt):
    overrides = kd_overrides(teacher_ckpt, "trainer.deterministic=true", "trainer.max_epochs=2", "seed=7", "report.enabled=false")
    first, _ = tiny_run(tmp_path / "a", *overrides)
    second, _ = tiny_run(tmp_path / "b", *overrides)
    for key in ("train/loss", "train/loss_kd", "val/acc", "val/kl", "test/acc", "test/kl"):
        assert first[key] == second[key], key
    third, _ = tiny_run(tmp_path / "c", *overrides[:-2], "seed=8", "report.enabled=false")
    assert third["train/loss"] != first["train/loss"]  # the seed matters


def test_resume_from_last_checkpoint(tmp_path, teacher_ckpt):
    tiny_run(tmp_path, *kd_overrides(teacher_ckpt, "report.enabled=false"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 0
    tiny_run(tmp_path, *kd_overrides(teacher_ckpt, "ckpt_path=last", "trainer.max_epochs=2", "report.enabled=false"))
    assert torch.load(last, weights_only=False)["global_step"] == 4  # 2 batches per epoch, 2 epochs
    csv_dir = tmp_path / "run" / "csv"

    def trained_epochs(path):
        return {r["epoch"] for r in csv.DictReader(path.open()) if r.get("train/loss")}

    resumed_logs = list(csv_dir.glob("resumed_*/metrics.csv"))
    assert trained_epochs(csv_dir / "metrics.csv") == {"0"}, "the first run's log was lost"
    assert len(resumed_logs) == 1
    assert trained_epochs(resumed_logs[0]) == {"1"}  # continued, not restarted
    assert list((tmp_path / "run").glob("run_resumed_*.json")) and (tmp_path / "run" / "run.json").is_file()


def test_resume_without_checkpoint_is_a_config_error(tmp_path, teacher_ckpt):
    from distillscope.errors import ConfigError

    with pytest.raises(ConfigError, match="ckpt_path"):
        tiny_run(tmp_path, *kd_overrides(teacher_ckpt, "ckpt_path=last"))

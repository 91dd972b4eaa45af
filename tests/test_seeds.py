"""Mean and standard deviation over seeds from a Hydra multirun."""

import json
import statistics

import pytest

from conftest import ROOT, run_cli
from distillscope.seeds import write_seed_summary


def fake_run(path, overrides, acc):
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (path / "report.json").write_text(json.dumps({"models": {"student (KD)": {"test/acc": acc}}}))


def test_groups_by_everything_but_the_seed_and_matches_hand_statistics(tmp_path):
    for i, (seed, acc) in enumerate([(1, 0.90), (2, 0.94), (3, 0.95)]):
        fake_run(tmp_path / str(i), ["experiment=digits_kd", f"seed={seed}"], acc)
    fake_run(tmp_path / "3", ["experiment=digits_kd", "distill=dkd", "seed=1"], 0.5)
    write_seed_summary([tmp_path / str(i) for i in range(4)], tmp_path)
    summary = json.loads((tmp_path / "seeds_summary.json").read_text())
    kd = summary["experiment=digits_kd"]["student (KD)"]["test/acc"]
    mean = (0.90 + 0.94 + 0.95) / 3
    std = (sum((v - mean) ** 2 for v in (0.90, 0.94, 0.95)) / 2) ** 0.5  # sample std, n-1
    assert kd["n"] == 3 and kd["mean"] == pytest.approx(mean) and kd["std"] == pytest.approx(std)
    assert summary["experiment=digits_kd distill=dkd"]["student (KD)"]["test/acc"] == {"mean": 0.5, "std": 0.0, "n": 1}
    assert "0.9300 ± 0.0265" in (tmp_path / "seeds_summary.md").read_text()


def test_multirun_over_seeds_writes_the_summary(tmp_path, teacher_ckpt):
    result = run_cli(["-m", "experiment=digits_kd", "seed=1,2", f"teacher.checkpoint={teacher_ckpt}", "logger=csv",
                      "explain.enabled=false", "report.baseline_checkpoint=null", "trainer.max_epochs=1",
                      "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2",
                      "trainer.enable_progress_bar=false", "report.latency_repeats=2", f"hydra.sweep.dir={tmp_path}"], cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    accs = [json.loads((tmp_path / str(i) / "report.json").read_text())["models"]["student (KD)"]["test/acc"] for i in (0, 1)]
    summary = json.loads((tmp_path / "seeds_summary.json").read_text())
    (group,) = summary.values()
    stat = group["student (KD)"]["test/acc"]
    assert stat["n"] == 2 and stat["mean"] == pytest.approx(statistics.fmean(accs))
    assert "seeds, mean ± std" in result.stdout

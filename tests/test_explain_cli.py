"""Explanations end to end: the train.py hook on a tiny KD run, the explain CLI on that run directory,
the soft-decision-tree student, and bad settings failing before training."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, kd_overrides, run_cli, tiny_run
from PIL import Image

from distillscope.errors import ConfigError

SMALL = ["explain.num_images=4", "explain.ig_steps=2", "explain.grid_rows=2", "explain.surrogates.tree_max_depth=3"]
FIGURES = ["reliability", "confusion", "class_similarity", "explanations_gradcam", "explanations_integrated_gradients",
           "explanations_saliency", "deletion"]


def assert_png(path):
    with Image.open(path) as img:
        assert img.format == "PNG" and min(img.size) > 50


def test_explain_hook_and_cli_write_figures_and_json(tmp_path, teacher_ckpt):
    # The teacher doubles as the "baseline": identical maps must give similarity 1 and a 0% closer-to-KD share.
    _, run_dir = tiny_run(tmp_path, *kd_overrides(teacher_ckpt, f"report.baseline_checkpoint={teacher_ckpt}",
                                                  "explain.enabled=true", *SMALL))
    summary = json.loads((run_dir / "explain" / "explain.json").read_text())
    assert set(FIGURES) <= set(summary["figures"])
    for rel in summary["figures"].values():
        assert_png(run_dir / "explain" / rel)
    report = (run_dir / "report.md").read_text()
    assert "| teacher |" in report and "![class_similarity](explain/class_similarity.png)" in report
    saliency = summary["maps"]["saliency"]
    assert saliency["similarity_to_teacher"]["baseline student"]["spearman"]["mean"] == pytest.approx(1.0)
    assert saliency["closer_to_kd_share"] == 0.0
    assert summary["fidelity"]["baseline student"]["agreement"] == 1.0
    assert summary["fidelity"]["baseline student"]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert summary["surrogates"]["features"] == "pixels"
    assert len(summary["images"]["labels"]) == 4 and len(set(summary["images"]["labels"])) == 4  # stratified

    out = tmp_path / "cli_explain"
    result = run_cli([f"run_dir={run_dir}", f"output_dir={out}", f"hydra.run.dir={tmp_path}/hydra", *SMALL,
                      "explain.methods=[saliency]", "explain.surrogates.enabled=false"], cwd=ROOT, module="distillscope.explain")
    assert result.returncode == 0, result.stderr[-2000:]
    cli = json.loads((out / "explain.json").read_text())
    assert set(cli["figures"]) == {"reliability", "confusion", "class_similarity", "explanations_saliency", "deletion"}
    assert cli["temperature"] == 4.0  # the run's distill.kd.temperature
    assert cli["fidelity"]["student (KD)"]["accuracy"] == pytest.approx(summary["fidelity"]["student (KD)"]["accuracy"])
    assert "## Fidelity and explanations" in result.stdout


def test_soft_tree_student_trains_with_kd_and_is_explained(tmp_path, teacher_ckpt):
    metrics, run_dir = tiny_run(tmp_path, "experiment=digits_soft_tree_kd", f"teacher.checkpoint={teacher_ckpt}",
                                "report.baseline_checkpoint=null", "student.depth=2", *SMALL,
                                "explain.methods=[saliency]", "explain.faithfulness=false", "explain.surrogates.enabled=false")
    assert 0.0 <= metrics["test/agreement"] <= 1.0
    summary = json.loads((run_dir / "explain" / "explain.json").read_text())
    assert "gradcam" not in summary["maps"] and "soft_tree" in summary["figures"]
    fid = summary["fidelity"]["student (KD)"]  # on the whole test split (the tiny run tests 2 batches)
    assert 0.0 <= fid["agreement"] <= 1.0 and fid["kl"] >= 0.0
    assert_png(run_dir / "explain" / summary["figures"]["soft_tree"])


def test_bad_explain_settings_fail_before_training(tmp_path, teacher_ckpt):
    with pytest.raises(ConfigError, match="explain.methods"):
        tiny_run(tmp_path, *kd_overrides(teacher_ckpt, "explain.enabled=true", "explain.methods=[gradcam,lime]"))
    assert not (tmp_path / "run" / "checkpoints").exists()

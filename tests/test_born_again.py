"""Born-again self-distillation: N generations from the CLI, each taught by the previous export."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import FAST, compose_cfg, run_cli
from distillscope.born_again import run_generations
from distillscope.errors import ConfigError


def test_two_generations_from_the_cli(teacher_ckpt, tmp_path):
    run_dir, gen_dir = tmp_path / "run", tmp_path / "ban"
    result = run_cli(
        ["experiment=digits_born_again", "generations=2", f"teacher.checkpoint={teacher_ckpt}",
         "student=resnet18",  # ignored: born-again students take the teacher's architecture
         f"born_again_dir={gen_dir}", "report.baseline_checkpoint=null", f"hydra.run.dir={run_dir}",
         f"paths.artifacts_dir={tmp_path}", *FAST],
        cwd=tmp_path, module="distillscope.born_again",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generation 2: test/acc" in result.stdout
    teacher_arch = torch.load(teacher_ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]["student_config"]["name"]
    expected_teacher = str(teacher_ckpt)
    for generation in (1, 2):
        record = json.loads((run_dir / f"gen{generation}" / "run.json").read_text())
        assert record["status"] == "finished"
        assert record["config"]["teacher"]["checkpoint"] == expected_teacher
        exported = gen_dir / f"gen{generation}.ckpt"
        hparams = torch.load(exported, map_location="cpu", weights_only=False)["hyper_parameters"]
        assert hparams["student_config"]["name"] == teacher_arch
        expected_teacher = str(exported)


@pytest.mark.parametrize(("override", "key"), [("generations=0", "generations"), ("teacher=none", "teacher.checkpoint")])
def test_bad_born_again_config_is_one_config_error(override, key, tmp_path):
    cfg = compose_cfg(["experiment=digits_born_again", override], tmp_path)
    with pytest.raises(ConfigError, match=key):
        run_generations(cfg)

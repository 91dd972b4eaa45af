"""Bad input fails before training with one line that names the config key and the fix."""

import pytest

from conftest import ROOT, compose_cfg, kd_overrides, run_cli
from distillscope.errors import ConfigError, find_config_error
from distillscope.train import train


def config_error(tmp_path, *overrides) -> ConfigError:
    with pytest.raises(Exception) as info:
        train(compose_cfg(["logger=csv", *overrides], tmp_path))
    error = find_config_error(info.value)
    assert error is not None, f"not a ConfigError: {info.value!r}"
    assert not (tmp_path / "run" / "checkpoints").exists(), "training started before the error"
    return error


def test_unknown_timm_model_suggests_close_names(tmp_path):
    error = config_error(tmp_path, "student=timm", "student.name=resnet1B")
    assert error.key == "student.name" and "resnet18" in str(error)


def test_missing_teacher_checkpoint(tmp_path):
    error = config_error(tmp_path, "experiment=digits_kd", f"teacher.checkpoint={tmp_path}/nope.ckpt")
    assert error.key == "teacher.checkpoint" and "make teacher" in str(error)


def test_class_count_mismatch(tmp_path):
    error = config_error(tmp_path, "teacher=timm", "teacher.name=cifar_resnet8", "teacher.num_classes=7", "distill=kd")
    assert error.key == "teacher" and "7 classes" in str(error) and "num_classes=10" in str(error)


@pytest.mark.parametrize("override,key", [
    ("distill.kd.weight=-0.5", "distill.kd.weight"),
    ("distill.ce.weight=-1", "distill.ce.weight"),
    ("distill.kd.temperature=0", "distill.kd.temperature"),
])
def test_negative_weight_and_nonpositive_temperature(tmp_path, teacher_ckpt, override, key):
    error = config_error(tmp_path, *kd_overrides(teacher_ckpt), override)
    assert error.key == key


def test_distill_term_without_teacher(tmp_path):
    error = config_error(tmp_path, "distill=kd")
    assert error.key == "distill.kd" and "teacher" in str(error)


def test_input_channel_mismatch(tmp_path, teacher_ckpt):
    error = config_error(tmp_path, *kd_overrides(teacher_ckpt), "data.in_chans=3")
    assert error.key == "data.in_chans"


def test_cli_prints_one_line_and_exits_2(tmp_path):
    result = run_cli(["experiment=digits_kd", f"teacher.checkpoint={tmp_path}/missing.ckpt", "logger=csv",
                      f"hydra.run.dir={tmp_path}/run"], cwd=ROOT)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("distillscope: error:")]
    assert len(lines) == 1 and "teacher.checkpoint" in lines[0] and "Fix:" in lines[0]


def test_cli_unknown_experiment_lists_the_options(tmp_path):
    result = run_cli(["experiment=digits_kdd", f"hydra.run.dir={tmp_path}/run"], cwd=ROOT)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "experiment/digits_kdd" in result.stderr and "digits_kd" in result.stderr

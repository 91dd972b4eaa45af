"""Feature taps: activations by module path or timm stage index, without editing the model."""

import pytest
import torch

from distillscope.errors import ConfigError
from distillscope.models import create_model
from distillscope.models.taps import FeatureTaps, resolve_tap


@pytest.fixture(scope="module")
def resnet8():
    torch.manual_seed(0)
    return create_model("cifar_resnet8", num_classes=10, in_chans=1).eval()


def test_taps_capture_stage_outputs_by_path_and_index(resnet8):
    taps = FeatureTaps(resnet8, ["stem", "stages.1", -1, "stage:2"])
    x = torch.randn(2, 1, 16, 16)
    logits = resnet8(x)
    feats = taps.pop()
    assert taps.pop() == {}  # popped features are never reused
    taps.remove()  # no more captures: the reference calls below would fire the hooks
    with torch.no_grad():  # the same activations computed by calling the submodules directly
        stem = resnet8.stem(x)
        s0 = resnet8.stages[0](stem)
        s1 = resnet8.stages[1](s0)
        s2 = resnet8.stages[2](s1)
    torch.testing.assert_close(feats["stem"], stem)
    torch.testing.assert_close(feats["stages.1"], s1)
    torch.testing.assert_close(feats["stage:2"], s1)  # feature_info: stem, stages.0, stages.1, stages.2
    torch.testing.assert_close(feats["-1"], s2)
    torch.testing.assert_close(logits, resnet8.fc(s2.mean(dim=(2, 3))))  # the model's output is unchanged
    resnet8(x)
    assert taps.features == {}


def test_timm_stage_indices_follow_feature_info():
    model = create_model("resnet18", num_classes=10, in_chans=1)
    assert [resolve_tap(model, i, "k") for i in range(5)] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert resolve_tap(model, -1, "k") == "layer4"


def test_wrong_path_lists_valid_names_under_the_callers_key(resnet8):
    with pytest.raises(ConfigError) as err:
        FeatureTaps(resnet8, {"stages.7": "distill.fitnet.student_taps"})
    message = str(err.value)
    assert message.startswith("distill.fitnet.student_taps: no module 'stages.7' in CifarResNet")
    assert "stages.0" in message and "stage indices 0..3" in message
    assert "\n" not in message


def test_stage_index_out_of_range_and_models_without_feature_info(resnet8):
    with pytest.raises(ConfigError, match=r"k: stage index 4 out of range \(4 stages\)"):
        resolve_tap(resnet8, 4, "k")
    with pytest.raises(ConfigError, match="has no timm feature_info"):
        resolve_tap(torch.nn.Sequential(torch.nn.Linear(2, 2)), -1, "k")
    # Without feature_info a digit can still be a module path (children of nn.Sequential).
    assert resolve_tap(torch.nn.Sequential(torch.nn.Linear(2, 2)), 0, "k") == "0"

"""Model construction and feature taps."""

from distillscope.models.factory import (
    check_model_name,
    count_parameters,
    create_model,
    load_model_from_checkpoint,
    read_model_state,
)
from distillscope.models.taps import FeatureTaps, resolve_tap

__all__ = [
    "FeatureTaps",
    "check_model_name",
    "count_parameters",
    "create_model",
    "load_model_from_checkpoint",
    "read_model_state",
    "resolve_tap",
]

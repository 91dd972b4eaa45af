"""Distillation methods: one file and one `DistillLoss` subclass per method."""

from distillscope.distill.base import DistillLoss, DistillOutputs, kl_soft_targets
from distillscope.distill.at import ATLoss
from distillscope.distill.crd import CRDLoss
from distillscope.distill.fitnet import FitNetLoss
from distillscope.distill.input_grad import InputGradLoss
from distillscope.distill.mgd import MGDLoss
from distillscope.distill.pkt import PKTLoss
from distillscope.distill.rkd import RKDLoss
from distillscope.distill.sp import SPLoss
from distillscope.distill.vid import VIDLoss
from distillscope.distill.ce import CELoss
from distillscope.distill.dist import DISTLoss
from distillscope.distill.dkd import DKDLoss
from distillscope.distill.hard_label import HardLabelLoss
from distillscope.distill.kd import KDLoss
from distillscope.distill.lskd import LSKDLoss
from distillscope.distill.mse_logits import MSELogitsLoss
from distillscope.distill.ranking import RankingLoss

__all__ = ["CELoss", "DistillLoss", "DistillOutputs", "KDLoss", "DISTLoss", "DKDLoss", "HardLabelLoss", "LSKDLoss", "MSELogitsLoss", "RankingLoss", "kl_soft_targets",
           "ATLoss", "CRDLoss", "FitNetLoss", "InputGradLoss", "MGDLoss", "PKTLoss", "RKDLoss", "SPLoss", "VIDLoss"]

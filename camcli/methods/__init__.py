"""CAM methods, by name. The registry feeds the CLI's --method choices and the README's
method table; every method is one small subclass of `BaseCAM`."""

from __future__ import annotations

from camcli.methods.base import TOP1, BaseCAM, Explanation, Predictor
from camcli.methods.cam import CAM
from camcli.methods.eigencam import EigenCAM
from camcli.methods.gradient import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from camcli.methods.scorecam import ScoreCAM

METHODS: dict[str, type[BaseCAM]] = {
    m.name: m
    for m in (CAM, GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, EigenCAM, ScoreCAM)
}

__all__ = ["METHODS", "TOP1", "BaseCAM", "CAM", "EigenCAM", "Explanation", "GradCAM",
           "GradCAMPlusPlus", "HiResCAM", "LayerCAM", "Predictor", "ScoreCAM", "XGradCAM"]

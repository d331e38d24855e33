"""CAM methods, by name. The registry feeds the CLI's --method choices and the manual's
method table; every method is one small subclass of `BaseCAM`."""

from __future__ import annotations

from camcli.compute.methods.ablation import AblationCAM
from camcli.compute.methods.attention import HEAD_FUSIONS, GradRollout, LeGrad, Rollout
from camcli.compute.methods.base import (
    SMOOTHINGS,
    TOP1,
    BaseCAM,
    Explanation,
    Predictor,
    rank_classes,
)
from camcli.compute.methods.cam import CAM
from camcli.compute.methods.eigencam import KERNELS, KPCACAM, EigenCAM, EigenGradCAM
from camcli.compute.methods.fullgrad import FullGrad
from camcli.compute.methods.gradient import (
    FinerCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    RandomCAM,
    ShapleyCAM,
    XGradCAM,
)
from camcli.compute.methods.guided import GuidedBackprop, GuidedGradCAM
from camcli.compute.methods.scorecam import ScoreCAM

METHODS: dict[str, type[BaseCAM]] = {
    m.name: m
    for m in (CAM, GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, EigenCAM, ScoreCAM,
              AblationCAM, EigenGradCAM, GradCAMElementWise, KPCACAM, ShapleyCAM, FinerCAM,
              FullGrad, GuidedBackprop, GuidedGradCAM, Rollout, GradRollout, LeGrad,
              RandomCAM)
}

__all__ = ["CAM", "HEAD_FUSIONS", "KERNELS", "KPCACAM", "METHODS", "SMOOTHINGS", "TOP1",
           "AblationCAM", "BaseCAM", "EigenCAM", "EigenGradCAM", "Explanation", "FinerCAM",
           "FullGrad", "GradCAM", "GradCAMElementWise", "GradCAMPlusPlus", "GradRollout",
           "GuidedBackprop", "GuidedGradCAM",
           "HiResCAM", "LayerCAM", "LeGrad", "Predictor", "RandomCAM", "Rollout", "ScoreCAM",
           "ShapleyCAM", "XGradCAM", "rank_classes"]


def methods_table() -> str:
    """The method table (Markdown) of `camcli methods` and the manual, from the registry."""
    rows = ["| method | paper | cost per image | when to use |", "| --- | --- | --- | --- |"]
    for method in METHODS.values():
        use_when = f"**baseline**: {method.use_when}" if method.baseline else method.use_when
        rows.append(f"| `{method.name}` | {method.paper} | {method.cost} | {use_when} |")
    return "\n".join(rows)

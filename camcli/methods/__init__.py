"""CAM methods, by name. The registry feeds the CLI's --method choices and the README's
method table; every method is one small subclass of `BaseCAM`."""

from __future__ import annotations

from camcli.methods.base import TOP1, BaseCAM, Explanation, Predictor, rank_classes
from camcli.methods.cam import CAM
from camcli.methods.eigencam import EigenCAM
from camcli.methods.gradient import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from camcli.methods.scorecam import ScoreCAM

METHODS: dict[str, type[BaseCAM]] = {
    m.name: m
    for m in (CAM, GradCAM, GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, EigenCAM, ScoreCAM)
}

__all__ = ["METHODS", "TOP1", "BaseCAM", "CAM", "EigenCAM", "Explanation", "GradCAM",
           "GradCAMPlusPlus", "HiResCAM", "LayerCAM", "Predictor", "ScoreCAM", "XGradCAM",
           "rank_classes"]


def methods_table() -> str:
    """The README's method table (Markdown), rendered from the registry."""
    rows = ["| method | paper | cost per image | when to use |", "| --- | --- | --- | --- |"]
    for method in METHODS.values():
        rows.append(f"| `{method.name}` | {method.paper} | {method.cost} | {method.use_when} |")
    return "\n".join(rows)

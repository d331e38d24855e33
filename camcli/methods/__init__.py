"""CAM methods, by name. The registry feeds the CLI's --method choices."""

from __future__ import annotations

from camcli.methods.base import TOP1, BaseCAM, Explanation, Predictor
from camcli.methods.cam import CAM
from camcli.methods.gradcam import GradCAM

METHODS: dict[str, type[BaseCAM]] = {m.name: m for m in (CAM, GradCAM)}

__all__ = ["METHODS", "TOP1", "BaseCAM", "CAM", "Explanation", "GradCAM", "Predictor"]

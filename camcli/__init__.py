"""camcli: where does an image classifier look? Class-activation heatmaps from the command line.

The package is a library first; `camcli.cli` is a thin click layer over it. In Python:

    import camcli
    session = camcli.open(model="efficientnet-lite0", method="gradcam")
    result = session.explain("cat.jpg")
    result.map, result.class_name, result.probability
    result.overlay()

(`camcli.run.api`). Importing `camcli` is cheap: TensorFlow is imported only by the modules
that run a model, when `open` loads one.
"""

from camcli.errors import (
    CamcliError,
    ClassError,
    ImageError,
    LayerError,
    ModelError,
    UnknownModel,
    UsageProblem,
)

__version__ = "0.1.0"

__all__ = ["CamcliError", "ClassError", "Explaining", "ImageError", "LayerError", "ModelError",
           "Result", "UnknownModel", "UsageProblem", "__version__", "open"]

_API = ("open", "Explaining", "Result")


def __getattr__(name: str):
    """`open`, `Explaining` and `Result` from `camcli.run.api`, imported on first use."""
    if name in _API:
        from camcli.run import api

        return getattr(api, name)
    raise AttributeError(f"module 'camcli' has no attribute {name!r}")

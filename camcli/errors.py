"""camcli's exceptions. The library raises these; the CLI turns them into one-line messages.

`UsageProblem` subclasses describe a request that cannot be served as asked (unknown model,
layer or class, a GPU that is absent): the CLI exits with code 2 for them. Other
`CamcliError`s are runtime failures (exit code 1). `ImageError` concerns one input only:
batch runs record it and go on.

The library speaks in parameters: a message names a parameter as ``{name}`` and lists it in
``params``; ``str(error)`` shows the parameter's name (``top_k_maps``), and the CLI shows
the option that sets it (``--top-k-maps``) through `CamcliError.render`.
"""

from __future__ import annotations


class CamcliError(Exception):
    """Base class of every error camcli raises on purpose.

    Args:
        message: the text; ``{name}`` stands for parameter ``name`` when it is in ``params``.
        params: the parameters the message names.
    """

    def __init__(self, message: str = "", params: tuple[str, ...] = ()):
        super().__init__(message)
        self.params = tuple(params)

    def render(self, spell=lambda name: name) -> str:
        """The message, each named parameter spelled by ``spell(name)``."""
        text = str(self.args[0]) if self.args else ""
        for name in self.params:
            text = text.replace("{" + name + "}", spell(name))
        return text

    def __str__(self) -> str:
        return self.render()


class UsageProblem(CamcliError):
    """The request itself is wrong (exit code 2)."""


class ImageError(CamcliError):
    """One input image could not be read or decoded."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ModelError(CamcliError):
    """A model could not be built, downloaded or loaded."""


class UnknownModel(UsageProblem):
    """The --model value is neither a built-in name nor an existing model file."""


class LayerError(UsageProblem):
    """The target layer does not exist or cannot be explained."""


class CamNotApplicable(UsageProblem):
    """CAM needs a global-average-pooling -> Dense head."""


class ClassError(UsageProblem):
    """A --class value names no class, or more than one."""


class DeviceError(UsageProblem):
    """The requested device is not available."""


class InputNotFound(UsageProblem):
    """An input path or glob matches nothing."""


class OutputError(CamcliError):
    """The output location cannot be written."""


class EngineError(CamcliError):
    """The engine that should run the work cannot (a Ray cluster that cannot be joined)."""


#: The exit codes of every command, and what each means (the reference's exit-code page is
#: generated from this).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "every input was processed (`score`: every gate passed)"),
    (EXIT_FAILED, "at least one input failed (each is reported on stderr and, for `batch`, in "
     "the manifest; the others were processed), inputs a Ray run could not do (`N not "
     "done`), `score` below `--min-pointing` / `--min-loc`, or a runtime failure "
     "(`CamcliError`) such as a model file that does not load, an output folder that cannot "
     "be written or a Ray cluster that cannot be joined (`Error: ...` on stderr, before any "
     "work)"),
    (EXIT_USAGE, "usage error (`UsageProblem`): a missing input path (named in the message), "
     "an unknown option value, model, layer or class, classes from `--class-from` the model "
     "does not have, `cam` on a model without a GAP → Dense head or with several layers, a "
     "GPU that is not there"),
    (EXIT_INTERRUPTED, "`batch` interrupted with Ctrl-C: in-flight outputs are finished and "
     "recorded first"),
)

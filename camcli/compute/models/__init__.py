"""Models: the registry of built-in models (`registry`), loading a built-in or a model file
into a `LoadedModel` (`loading`), and camcli's metadata inside ``.keras`` files
(`metadata`). The graph split at the target layer is `graph`.
"""

from camcli.compute.models.loading import (
    MODEL_FILE_SUFFIXES,
    LoadedModel,
    architecture,
    in_memory,
    load,
)
from camcli.compute.models.metadata import METADATA_MEMBER, read_metadata, write_metadata
from camcli.compute.models.registry import BUILTIN, ModelSpec
from camcli.options import DEFAULT_MODEL

__all__ = ["BUILTIN", "DEFAULT_MODEL", "METADATA_MEMBER", "MODEL_FILE_SUFFIXES", "LoadedModel",
           "ModelSpec", "architecture", "in_memory", "load", "read_metadata", "write_metadata"]

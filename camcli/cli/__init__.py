"""The ``camcli`` command line: parse, build the request objects (`camcli.options.Given`),
make one library call, print. Nothing here computes anything; TensorFlow is imported only
inside command bodies, so ``camcli --help`` and ``--version`` are instant.

* `app` — the group, logging, ``--storage-option``, errors -> exit codes;
* `params` — the option bundles and parameter types;
* `present` — progress bars and what is printed;
* the commands: `explain` (predict, cam, gradcam, explain), `batch`, `inspect` (models,
  layers, methods), `analyse` (score, audit, report), `evaluate`, `train`.
"""

from camcli.cli import (  # noqa: F401  (they register)
    analyse,
    batch,
    evaluate,
    explain,
    inspect,
    train,
)
from camcli.cli.app import main

__all__ = ["main"]

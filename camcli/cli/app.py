"""The ``camcli`` group: logging and verbosity, ``--storage-option``, and how library
errors become one-line ``Error: ...`` messages and exit codes.

Library errors become one-line ``Error: ...`` messages: exit code 2 for requests that
cannot be served as asked (`UsageProblem`), 1 for other failures.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import click

from camcli import __version__
from camcli.errors import EXIT_USAGE, CamcliError, UsageProblem

log = logging.getLogger("camcli")


class UsageFailure(click.ClickException):
    """A request that cannot be served as asked: ``Error: ...`` and exit code 2."""

    exit_code = EXIT_USAGE


def translate_errors(command):
    """Turn camcli's library errors into click errors with one-line messages; the
    parameters a message names are spelled as this command's options (``--top-k-maps``)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UsageProblem as exc:
            raise UsageFailure(exc.render(flag)) from None
        except CamcliError as exc:
            raise click.ClickException(exc.render(flag)) from None

    return wrapper


def flag(name: str) -> str:
    """The option of the current command that sets parameter ``name`` (its long form)."""
    context = click.get_current_context(silent=True)
    for param in context.command.params if context else ():
        if param.name == name and isinstance(param, click.Option):
            return max(param.opts, key=len)
    return name


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value:
        return
    state = ctx.find_root().ensure_object(dict)
    state["verbosity"] = -1 if param.name == "quiet" else 1
    _configure_logging(state["verbosity"])  # -q / -v may follow the command's name


def _configure_logging(verbosity: int) -> None:
    level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}[verbosity]
    if verbosity > 0:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("camcli: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def verbosity_options(command):
    """-v, -q and --storage-option: what every command takes."""
    command = click.option("-v", "--verbose", "verbose", is_flag=True, expose_value=False,
                           callback=_set_verbosity, help="Log more (debug details).")(command)
    command = click.option("-q", "--quiet", "quiet", is_flag=True, expose_value=False,
                           callback=_set_verbosity,
                           help="Only warnings and errors on stderr; no progress bar.")(command)
    command = click.option("--storage-option", "storage_options", multiple=True,
                           metavar="KEY=VALUE", expose_value=False, is_eager=True,
                           callback=_set_storage_options,
                           help="Passed to fsspec for URLs (s3://, gs://, az://), e.g. "
                                "anon=true; credentials and endpoints come from each "
                                "store's standard settings (AWS_* variables...).")(command)
    return command


def _set_storage_options(ctx: click.Context, param: click.Parameter, values) -> None:
    from camcli.io.storage import option_pairs

    try:
        option_pairs(values)  # refused here, with the option's name, before any work
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    # given before the command's name and after it: both count, the later ones win
    ctx.find_root().ensure_object(dict).setdefault("storage_options", []).extend(values)


def verbosity() -> int:
    return click.get_current_context().find_root().ensure_object(dict).get("verbosity", 0)


def storage():
    """The command's `camcli.io.storage.Storage`: its ``--storage-option`` pairs and the
    environment's ``CAMCLI_PART_RECORDS`` (a value handed down; nothing global is set).

    Raises:
        UsageProblem: ``CAMCLI_PART_RECORDS`` is not a whole number of at least 1.
    """
    from camcli.io.storage import Storage

    state = click.get_current_context().find_root().ensure_object(dict)
    return Storage.from_settings(state.get("storage_options", []))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="camcli")
@verbosity_options
def main():
    """camcli: where does an image classifier look?

    Runs a Keras model over photos and writes class-activation heatmaps (CAM, Grad-CAM)
    blended over each photo, plus a JSON record of what the model predicted.

    \b
    Examples:
      camcli predict photo.jpg
      camcli cam photo.jpg
      camcli gradcam --layer block5_conv3 --model vgg16 photo.png
      camcli batch ./Caltech101 --out heatmaps --class-from folder --boxes
      camcli score heatmaps --truth boxes.csv --min-pointing 0.8
      camcli train ./my_classes -o mine.keras
    """
    _configure_logging(verbosity())  # every command logs alike; -q / -v change it

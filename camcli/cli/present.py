"""Presentation: progress bars, the command line as typed, Ctrl-C, and what the commands
print.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading

import click
from click.core import ParameterSource

from camcli.cli.app import verbosity


def progress_hook(method: str | None):
    """What a slow method calls with its total to show its own progress bar
    (`inner_progress`)."""
    return functools.partial(inner_progress, method)


def inner_progress(method: str, total: int):
    """A slow method's inner progress bar (Score-CAM's masked images, Ablation-CAM's
    ablated channels, of the current batch)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="map", desc=method, leave=False, file=sys.stderr,
                disable=verbosity() < 0, position=1, dynamic_ncols=True)


class ProgressBar:
    """tqdm on stderr: count, ETA and images/s; errors printed above the bar."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def start(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="img", file=sys.stderr, disable=self.quiet,
                        dynamic_ncols=True, desc="camcli")

    def advance(self, path: str | None = None, error: str | None = None) -> None:
        if error:
            message = f"Error: {path}: {error}"
            if self.quiet:
                click.echo(message, err=True)
            else:
                self.bar.write(message, file=sys.stderr)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def command_line() -> str:
    """The current command as typed, rebuilt from what was given on the command line."""
    import shlex

    context = click.get_current_context()
    words = ["camcli", context.info_name]
    for param in context.command.params:
        if not param.expose_value or \
                context.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue  # (-q / -v are added below)
        value = context.params.get(param.name)
        if isinstance(param, click.Argument):
            words += list(value) if isinstance(value, tuple) else [str(value)]
        elif param.is_flag:
            words.append(param.opts[-1] if len(param.opts[-1]) > 2 else param.opts[0])
        else:
            for one in value if param.multiple else [value]:
                words += [max(param.opts, key=len), str(one)]
    level = verbosity()
    words += ["-q"] if level < 0 else ["-v"] if level > 0 else []
    return shlex.join(words)


def manifest_shown(path: str) -> str:
    """Where the records are: the manifest file, or in an object store its parts' folder
    (`camcli.io.remote.PartsAppender`)."""
    from camcli.io.locations import is_url

    return path.removesuffix(".jsonl") + "/" if is_url(path) else path


def say_metrics(means: dict) -> None:
    """The run's mean metrics, on stderr."""
    said = []
    if "deletion_auc" in means:
        said.append(f"deletion AUC {means['deletion_auc']:.3f} (lower is better), insertion "
                    f"AUC {means['insertion_auc']:.3f} (higher is better), average drop "
                    f"{means['average_drop']:.1f}% (lower is better), increase in confidence "
                    f"{means['increase']:.1f}% (higher is better)")
    if "road_combined" in means:
        said.append(f"ROAD MoRF {means['road_morf']:+.4f} (lower is better), LeRF "
                    f"{means['road_lerf']:+.4f} (higher is better), combined "
                    f"{means['road_combined']:+.4f} (higher is better)")
    click.echo(f"camcli: metrics over {means['images']} images: {'; '.join(said)}", err=True)


@contextlib.contextmanager
def graceful_ctrl_c():
    """First Ctrl-C: finish the images in flight, record them, stop. Second: abort."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo("\ncamcli: stopping after the images in flight (Ctrl-C again to abort)",
                   err=True)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. embedded): plain KeyboardInterrupt
        yield stop
        return
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def json_prediction(row: dict) -> dict:
    top = [{"class_index": i, "label": label, "probability": p} for i, label, p in row["top"]]
    return {"input": row["input"], "top": top, "error": row["error"]}


def print_table_row(row: dict) -> None:
    if row["error"]:
        return
    click.echo(row["input"])
    for rank, (index, label, probability) in enumerate(row["top"], 1):
        click.echo(f"  {rank}. {label:<30} {probability:7.2%}  (class {index})")

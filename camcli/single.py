"""``camcli cam`` / ``camcli gradcam``: one overlay per image, named after the image.

Default name ``<stem>_<method>.jpg`` in the current folder (or in ``out_dir``); inputs from
sub-folders keep their relative folder, so two ``x.jpg`` never overwrite each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from camcli import render
from camcli.atomic import write_atomic
from camcli.inputs import InputItem
from camcli.pipeline import Explainer, explain_stream


@dataclass
class Written:
    """One image's outcome: the overlay written and the class explained, or an error."""

    input: str
    output: str | None = None
    class_index: int | None = None
    label: str | None = None
    score: float | None = None
    error: str | None = None


def output_path(item: InputItem, method: str, output: str | None = None,
                out_dir: str | None = None) -> str:
    """Where the overlay of ``item`` goes (see module docstring)."""
    if output:
        return output
    stem = os.path.splitext(item.relative)[0]
    return os.path.join(out_dir or os.curdir, f"{stem}_{method}.jpg")


def explain_images(items: Iterable[InputItem], explainer: Explainer, method: str,
                   output: str | None = None, out_dir: str | None = None, batch_size: int = 32,
                   alpha: float = 0.4, colormap: str = "jet",
                   quality: int = 90) -> Iterator[Written]:
    """Write one overlay per image; yields a `Written` per input, in order."""
    labels = explainer.loaded.labels
    for result in explain_stream(items, explainer, batch_size):
        if result.error:
            yield Written(result.item.path, error=result.error)
            continue
        path = output_path(result.item, method, output, out_dir)
        try:
            picture = render.overlay(result.image, result.heatmap, alpha, colormap)
            write_atomic(path, render.encode_jpeg(picture, quality))
        except OSError as exc:
            yield Written(result.item.path, error=f"cannot write {path}: {exc.strerror or exc}")
            continue
        except Exception as exc:  # e.g. cv2.error: this image fails, the others go on
            yield Written(result.item.path,
                          error=f"cannot render {path} ({type(exc).__name__}: {exc})")
            continue
        yield Written(result.item.path, path, result.class_index,
                      labels.name(result.class_index), result.score)

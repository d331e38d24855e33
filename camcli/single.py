"""``camcli cam`` / ``gradcam`` / ``explain``: one overlay per image, named after it.

Default name ``<stem>_<method>.jpg`` in the current folder (or in ``out_dir``); inputs from
sub-folders keep their relative folder, so two ``x.jpg`` never overwrite each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from camcli import render
from camcli.atomic import write_atomic
from camcli.batch import renders
from camcli.inputs import InputItem
from camcli.pipeline import Explainer, explain_stream


@dataclass
class Written:
    """One overlay's outcome: the file written and the class explained, or an error."""

    input: str
    output: str | None = None
    class_index: int | None = None
    label: str | None = None
    score: float | None = None
    error: str | None = None
    rank: int | None = None


def output_path(item: InputItem, method: str, output: str | None = None,
                out_dir: str | None = None) -> str:
    """Where the overlay of ``item`` goes (see module docstring)."""
    if output:
        return output
    stem = os.path.splitext(item.relative)[0]
    return os.path.join(out_dir or os.curdir, f"{stem}_{method}.jpg")


def explain_images(items: Iterable[InputItem], explainer: Explainer, method: str,
                   output: str | None = None, out_dir: str | None = None, batch_size: int = 32,
                   alpha: float = 0.4, colormap: str = "jet", quality: int = 90,
                   panel: bool = False) -> Iterator[Written]:
    """Write one overlay (or, with ``panel``, an original | heatmap | overlay panel with
    a caption) per image; yields a `Written` per picture, in order."""
    labels = explainer.loaded.labels
    for result in explain_stream(items, explainer, batch_size):
        if result.error:
            yield Written(result.item.path, error=result.error)
            continue
        path = output_path(result.item, method, output, out_dir)
        for rank, class_index, heatmap, target, _ in renders(result, path, None, labels):
            try:
                if panel:
                    probability = float(result.probabilities[class_index])
                    caption = (f"{labels.name(class_index)} (class {class_index}) "
                               f"{probability:.1%} - {method}")
                    picture = render.panel(result.image, heatmap, caption, alpha, colormap)
                else:
                    picture = render.overlay(result.image, heatmap, alpha, colormap)
                write_atomic(target, render.encode_jpeg(picture, quality))
            except OSError as exc:
                error = f"cannot write {target}: {exc.strerror or exc}"
                yield Written(result.item.path, error=error, rank=rank)
                continue
            except Exception as exc:  # e.g. cv2.error: this image fails, the others go on
                error = f"cannot render {target} ({type(exc).__name__}: {exc})"
                yield Written(result.item.path, error=error, rank=rank)
                continue
            yield Written(result.item.path, target, class_index, labels.name(class_index),
                          float(result.probabilities[class_index]), rank=rank)

"""Pictures out: where each one goes, how it is drawn and written, and how a failure reads.

Shared by ``batch`` (a mirrored tree under ``--out``) and the single-image commands
(``<stem>_<method>.jpg``). One image gives one picture per map: one by default, or one per
rank with ``--top-k-maps`` (``<name>.<rank>-<label>.jpg``). A picture is an overlay, or
with ``RenderStyle.panel`` the original | heatmap | overlay panel under a caption. Every
file is written whole (a store's ``write_atomic``, `camcli.io.storage`). Where a map points
(its peak, its box) is found before anything is drawn (`locate`, with
`camcli.analysis.localise`); `write` draws and writes, and says what it wrote (`Drawn`).
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field

import numpy as np

from camcli.errors import OutputError
from camcli.io import locations
from camcli.io.storage import Storage, resolved
from camcli.options import RenderStyle

#: Write errors that are about the output location, not the input: they stop the run.
FATAL_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


@dataclass(frozen=True)
class Picture:
    """One map of one image and the files it becomes.

    Attributes:
        rank: with --top-k-maps, the class's rank (1 = most probable); else None.
        class_index: the explained class.
        heatmap: the [0, 1] map at feature-map resolution.
        path: the picture (JPEG).
        map_path: the ``.npy`` of ``heatmap``, or None.
    """

    rank: int | None
    class_index: int
    heatmap: np.ndarray
    path: str
    map_path: str | None = None


@dataclass(frozen=True)
class Drawn:
    """A picture written: which, and where its map points in the photo.

    Attributes:
        picture: the picture, its files written whole.
        peak: ``[x, y]`` of the map's maximum in the photo's pixels, or None (an all-zero
            map).
        box: ``[x0, y0, x1, y1]`` of the object's box, or None (no box asked for, or an
            all-zero map).
    """

    picture: Picture
    peak: list[int] | None
    box: list[int] | None


def safe_label(label: str) -> str:
    """A class label fit for a file name: ``potter's wheel`` -> ``potter_s_wheel``."""
    return re.sub(r"[^0-9A-Za-z._-]+", "_", label).strip("._") or "class"


#: In a --top-k-maps run, the asked class's picture is ``<stem>.class-<label>.jpg``.
ASKED = "class"


def ranked_stem(stem: str, rank: int | str, label: str) -> str:
    """``<stem>.<rank>-<label>``: the name of the picture of one rank of --top-k-maps (or,
    with rank `ASKED`, of the class asked for beside them)."""
    return f"{stem}.{rank}-{safe_label(label)}"


def pictures(result, path: str, save_map: bool, labels) -> list[Picture]:
    """The pictures of one explained image (a `camcli.run.pipeline.ImageResult`).

    ``path`` is the picture's name; with ranked maps, every map gets a `ranked_stem` name
    beside it.
    """
    stem = os.path.splitext(path)[0]
    ranked = any(explained.rank is not None for explained in result.maps)
    made = []
    for explained in result.maps:
        if not ranked:
            name = stem
        else:
            name = ranked_stem(stem, explained.rank or ASKED,
                               labels.name(explained.class_index))
        made.append(Picture(explained.rank, explained.class_index, explained.heatmap,
                            name + ".jpg", name + ".npy" if save_map else None))
    return made


def caption(label: str, class_index: int, probability: float, method: str) -> str:
    """The panel's caption: ``Egyptian_cat (class 285) 81.3% - gradcam``."""
    return f"{label} (class {class_index}) {probability:.1%} - {method}"


def locate(result, picture: Picture, box_threshold: float | None = None
           ) -> tuple[list[int] | None, list[int] | None]:
    """Where ``picture``'s map points in the result's photo: ``(peak, box)``, the box only
    with ``box_threshold`` (`camcli.analysis.localise.locate`)."""
    from camcli.analysis import localise

    height, width = result.image.shape[:2]
    return localise.locate(picture.heatmap, width, height, box_threshold)


def draw(image: np.ndarray, probabilities: np.ndarray, class_index: int, heatmap: np.ndarray,
         style: RenderStyle, method: str, labels, box: list[int] | None = None) -> np.ndarray:
    """The picture of one map over its RGB photo, as every command draws it: the overlay
    (with ``box``, when given) or, with ``style.panel``, the captioned panel; BGR uint8."""
    from camcli.run import render

    if style.panel:
        text = caption(labels.name(class_index), class_index,
                       float(probabilities[class_index]), method)
        return render.panel(image, heatmap, text, style.alpha, style.colormap, box)
    drawn = render.overlay(image, heatmap, style.alpha, style.colormap)
    if box is not None:
        render.draw_box(drawn, box)
    return drawn


def write(result, picture: Picture, style: RenderStyle, method: str, labels,
          peak: list[int] | None = None, box: list[int] | None = None,
          storage: Storage | None = None) -> Drawn:
    """Draw ``picture`` over the result's photo (with ``box``, when given) and write it
    (and its map) atomically; returns what was written.

    Raises:
        OSError: a file cannot be written; anything else: the picture cannot be drawn.
    """
    from camcli.run import render

    drawn = draw(result.image, result.probabilities, picture.class_index, picture.heatmap,
                 style, method, labels, box)
    store = resolved(storage).store(picture.path)
    store.write_atomic(picture.path, render.encode_jpeg(drawn, style.quality))
    if picture.map_path is not None:
        store.write_atomic(picture.map_path,
                           render.encode_npy(picture.heatmap.astype("float32")))
    return Drawn(picture, peak, box)


@dataclass
class Outcome:
    """What `write_all` did for one image.

    Attributes:
        written: the pictures written, in order.
        error: why the image's next picture could not be made (this input fails).
        fatal: a write error about the output location (a full or read-only disk): not
            the input's fault; the caller stops.
    """

    written: list[Drawn] = field(default_factory=list)
    error: str | None = None
    fatal: OSError | None = None


def write_all(result, pictures: list[Picture], style: RenderStyle, method: str, labels,
              box_threshold: float | None = None, storage: Storage | None = None) -> Outcome:
    """Locate and `write` each of an image's pictures in order, stopping at the first that
    fails."""
    outcome = Outcome()
    for picture in pictures:
        try:
            peak, box = locate(result, picture, box_threshold)
            outcome.written.append(write(result, picture, style, method, labels, peak, box,
                                         storage))
        except OSError as exc:
            if exc.errno in FATAL_WRITE_ERRORS:
                outcome.fatal = exc
            else:
                outcome.error = failure(exc, picture.path)
            break
        except Exception as exc:  # e.g. cv2.error: this input fails, the run goes on
            outcome.error = failure(exc, picture.path)
            break
    return outcome


def failure(exc: BaseException, path: str) -> str:
    """How a picture that could not be made reads, in the manifest and on stderr."""
    if isinstance(exc, OSError):
        return f"cannot write {path}: {exc.strerror or exc}"
    return f"cannot render {path} ({type(exc).__name__}: {exc})"


# -- names ---------------------------------------------------------------------------------


def single_name(relative: str, method: str, output: str | None = None,
                out_dir: str | None = None) -> str:
    """Where ``cam`` / ``gradcam`` / ``explain`` write an input's picture: ``output`` if
    given, else ``<stem>_<method>.jpg`` under ``out_dir`` (default: the current folder),
    keeping the input's relative folder so two ``x.jpg`` never overwrite each other."""
    if output:
        return output
    stem = os.path.splitext(relative)[0]
    return locations.join(out_dir or os.curdir, f"{stem}_{method}.jpg")


class MirroredNames:
    """``batch``'s names: ``OUT/<relative path>`` with the extension ``.jpg``. When two
    inputs would share a name (``a.png`` and ``a.jpg``) the later keeps its full name
    (``a.png.jpg``). Inputs come in a deterministic order, so reruns name alike."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self._claimed: dict[str, str] = {}

    def __call__(self, relative: str) -> str:
        name = os.path.splitext(relative)[0] + ".jpg"
        owner = self._claimed.setdefault(name, relative)
        if owner != relative:
            name = relative + ".jpg"
            self._claimed.setdefault(name, relative)
        return safe_join(self.out_dir, name)


def safe_join(out_dir: str, relative: str) -> str:
    """``out_dir/relative``; refuses a path that would leave ``out_dir``.

    Raises:
        OutputError: ``relative`` is absolute or climbs out with ``..``.
    """
    normal = os.path.normpath(relative)
    if os.path.isabs(normal) or normal == ".." or normal.startswith(".." + os.sep):
        raise OutputError(f"output path {relative!r} would leave the output folder")
    return locations.join(out_dir, normal)

"""``camcli cam`` / ``gradcam`` / ``explain``: pictures named after each image.

Default name ``<stem>_<method>.jpg`` in the current folder (or in ``out_dir``); inputs from
sub-folders keep their relative folder, so two ``x.jpg`` never overwrite each other. With
--top-k-maps, one picture per rank: ``<stem>_<method>.<rank>-<label>.jpg``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from camcli.errors import OutputError
from camcli.io import locations
from camcli.io.inputs import InputItem
from camcli.options import DEFAULT_BATCH_SIZE, RenderStyle
from camcli.run import outputs
from camcli.run.classes import with_classes
from camcli.run.session import Session


@dataclass
class Written:
    """One picture's outcome: the file written and the class explained, or an error."""

    input: str
    output: str | None = None
    class_index: int | None = None
    label: str | None = None
    score: float | None = None
    error: str | None = None
    box: list[int] | None = None


def explain_images(items: Iterable[InputItem], session: Session, output: str | None = None,
                   out_dir: str | None = None, style: RenderStyle = RenderStyle(),
                   batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[Written]:
    """Write the pictures of each image (see the module docstring); yields a `Written` per
    picture (or per image that failed), in order. An image whose picture fails gets no
    more pictures, as in ``batch``.

    Raises:
        UsageProblem: with a class per image, some inputs' classes are unknown (before
            any work).
        OutputError: the disk filled up or became read-only (after the pictures before).
    """
    labels, method = session.labels, session.explainer.method_name
    items = list(items)
    _, items = with_classes(lambda: items, session.assigner)
    for result in session.stream(items, batch_size):
        path = result.input.path
        if result.error:
            yield Written(path, error=result.error)
            continue
        name = outputs.single_name(result.input.relative, method, output, out_dir)
        outcome = outputs.write_all(result, outputs.pictures(result, name, False, labels),
                                    style, method, labels, session.box_threshold,
                                    session.storage)
        for drawn in outcome.written:
            picture = drawn.picture
            yield Written(path, picture.path, picture.class_index,
                          labels.name(picture.class_index),
                          float(result.probabilities[picture.class_index]), box=drawn.box)
        if outcome.error is not None:
            yield Written(path, error=outcome.error)
        if outcome.fatal is not None:
            folder = locations.dirname(locations.absolute(name))
            raise OutputError(f"cannot write to {folder}: "
                              f"{outcome.fatal.strerror or outcome.fatal}")

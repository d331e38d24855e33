"""``camcli cam`` / ``gradcam`` / ``explain``: pictures named after each image.

Default name ``<stem>_<method>.jpg`` in the current folder (or in ``out_dir``); inputs from
sub-folders keep their relative folder, so two ``x.jpg`` never overwrite each other. With
--top-k-maps, one picture per rank: ``<stem>_<method>.<rank>-<label>.jpg``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from camcli import outputs
from camcli.inputs import InputItem
from camcli.options import DEFAULT_BATCH_SIZE, RenderStyle
from camcli.pipeline import Explainer, explain_stream


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


def explain_images(items: Iterable[InputItem], explainer: Explainer, output: str | None = None,
                   out_dir: str | None = None, style: RenderStyle = RenderStyle(),
                   batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[Written]:
    """Write the pictures of each image (see the module docstring); yields a `Written` per
    picture (or per image that failed), in order."""
    labels, method = explainer.loaded.labels, explainer.method_name
    if explainer.classes is not None:  # every input's class is checked before any work
        items = list(items)
        explainer.classes.check(items)
        items = list(explainer.classes.assign(items))
    for result in explain_stream(items, explainer, batch_size):
        if result.error:
            yield Written(result.item.path, error=result.error)
            continue
        name = outputs.single_name(result.item.relative, method, output, out_dir)
        for picture in outputs.pictures(result, name, False, labels):
            try:
                outputs.write(result, picture, style, method, labels, explainer.box_threshold)
            except Exception as exc:  # e.g. cv2.error: this picture fails, the others go on
                yield Written(result.item.path, error=outputs.failure(exc, picture.path))
                continue
            probability = float(result.probabilities[picture.class_index])
            yield Written(result.item.path, picture.path, picture.class_index,
                          labels.name(picture.class_index), probability, box=picture.box)

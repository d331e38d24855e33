"""Target planning: which classes to explain for each image, as values.

A run asks one of five things of every image:

========================  ==============  =========================================
asked with                kind            maps per image
========================  ==============  =========================================
(nothing)                 ``top1``        its most probable class
``--class C``             ``class``       class C
``--class-from``          ``class``       the class asked for that image
``--top-k-maps K``        ``top-k``       its K most probable classes (ranks 1..K)
both of the last two      ``top-k+class`` the K ranks, then the asked class
========================  ==============  =========================================

`TargetPlan` is what a run asks (from its `camcli.options.ExplainRequest`); per batch it
gives a `Targets` value, which the compute layer (`camcli.compute.explainer.Explainer`) takes as
pytorch-grad-cam's ``BaseCAM`` takes its targets. `Targets.passes` says which passes of
the method a batch needs once its probabilities are known. A new kind of target is a new
field here and the passes it adds; nothing else decides what is explained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from camcli.compute.methods.base import TOP1, rank_classes


@dataclass(frozen=True)
class Pass:
    """One run of the method over some images of a batch.

    Attributes:
        rows: the images, by their row in the batch.
        classes: the class explained for each of them.
        rank: the rank of these classes (--top-k-maps), or None for an asked class.
    """

    rows: np.ndarray
    classes: np.ndarray
    rank: int | None


@dataclass(frozen=True)
class Targets:
    """The classes to explain in one batch.

    Attributes:
        asked: ``(n,)`` int32, the class asked of each image, or `TOP1` where none is.
        top_k: also explain each image's K most probable classes (ranks 1..K, first), or
            None.
    """

    asked: np.ndarray
    top_k: int | None = None

    @property
    def first(self) -> np.ndarray:
        """The classes of the first pass, which also gives the probabilities: the asked
        ones (`TOP1`: the top class), or with ranks, every image's top class (rank 1)."""
        if self.top_k:
            return np.full(len(self.asked), TOP1, np.int32)
        return self.asked

    @property
    def first_rank(self) -> int | None:
        """The rank of the first pass's maps: 1 with ranks, else None."""
        return 1 if self.top_k else None

    def passes(self, probabilities: np.ndarray) -> list[Pass]:
        """The passes after the first: ranks 2..K over every image, then the asked class
        of the images that have one (its map follows the ranks)."""
        if not self.top_k:
            return []
        every = np.arange(len(self.asked))
        ranked = rank_classes(probabilities, self.top_k).astype(np.int32)
        later = [Pass(every, ranked[:, rank], rank + 1) for rank in range(1, ranked.shape[1])]
        rows = np.flatnonzero(self.asked >= 0)
        if len(rows):
            later.append(Pass(rows, self.asked[rows], None))
        return later


@dataclass(frozen=True)
class TargetPlan:
    """What a run asks of every image.

    Attributes:
        fixed_class: the class asked of every image (``--class``), or None.
        class_source: with a class per image (``--class-from``), where it comes from:
            ``folder`` or ``file``; else None.
        top_k: explain each image's K most probable classes (at most the model's number
            of classes), or None.
    """

    fixed_class: int | None = None
    class_source: str | None = None
    top_k: int | None = None

    def __post_init__(self):
        if self.fixed_class is not None and self.class_source is not None:
            raise ValueError("a plan asks one class of every image or a class per image, "
                             "not both")
        if self.class_source not in (None, "folder", "file"):
            raise ValueError(f"class_source must be folder or file, got {self.class_source!r}")

    def targets(self, asked: Sequence[int | None]) -> Targets:
        """The batch's `Targets`; ``asked`` holds each image's own class (a class per
        image; None where it has none), and is ignored otherwise."""
        if self.class_source is not None:
            classes = [TOP1 if one is None else one for one in asked]
        else:
            classes = [TOP1 if self.fixed_class is None else self.fixed_class] * len(asked)
        return Targets(np.asarray(classes, np.int32).reshape(len(asked)), self.top_k)

    def kind(self, asked: int | None = None) -> tuple[str, int | None, str | None]:
        """What is asked of one image, as its records say it: ``(kind, requested class,
        class source)``; ``asked`` is the image's own class (a class per image)."""
        if self.class_source is not None:
            requested, source = asked, self.class_source
        elif self.fixed_class is not None:
            requested, source = self.fixed_class, "option"
        else:
            return ("top1" if self.top_k is None else "top-k"), None, None
        return ("class" if self.top_k is None else "top-k+class"), requested, source

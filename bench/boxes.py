"""Measurement behind --box-threshold's default: on labelled images made here (sample
photos pasted at known boxes on smooth backgrounds, `tests/pasted.py`), the boxes of the
true class's map at each threshold, against the true boxes. Run by ``make bench``.

Prints, per method and threshold: localisation accuracy (IoU >= 0.5, the CAM paper's
criterion), mean IoU, and the pointing game (peak within 15 px of the box).

    python bench/boxes.py [--per-class 10] [--methods cam,gradcam,layercam]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
from batch import machine  # noqa: E402
from pasted import pasted_tree  # noqa: E402

from camcli import localise  # noqa: E402
from camcli.inputs import discover  # noqa: E402
from camcli.models import load  # noqa: E402
from camcli.options import ExplainRequest  # noqa: E402
from camcli.session import Session  # noqa: E402

THRESHOLDS = (0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)


def pasted_maps(loaded, request: ExplainRequest, root: Path, truth: dict):
    """``(upsampled map, pointing hit, true box)`` per pasted photo under ``root``, each
    explained for its folder's class (``request`` has ``class_from="folder"``)."""
    session = Session.create(loaded, request)
    session.assigner.check(discover([str(root)]))
    for result in session.stream(session.assigner.assign(discover([str(root)]))):
        height, width = result.image.shape[:2]
        upsampled = localise.upsample(result.maps[0].heatmap, width, height)
        true_box = truth[result.input.path]
        peak = localise.peak(upsampled)  # None for an all-zero map: a miss
        hit = peak is not None and localise.distance_to_box(peak, true_box) <= 15
        yield upsampled, hit, true_box


def box_iou(upsampled, threshold: float, true_box) -> float:
    """IoU of the map's box with the true one (0 for a map with no box)."""
    found = localise.box(upsampled, threshold)
    return 0.0 if found is None else localise.iou(found, true_box)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=15)
    parser.add_argument("--methods", default="cam,gradcam,layercam")
    args = parser.parse_args()

    loaded = load("efficientnet-lite0")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "tree"
        made = pasted_tree(root, per_class=args.per_class, seed=1, scale=(0.25, 0.75))
        truth = {str(root / relative): box for relative, _, box in made}
        print(f"camcli box-threshold measurement — {len(made)} photos pasted at 25-75% of "
              f"a 320x320 background (4 classes), default model, class from the folder; "
              f"{machine()}\n")
        print("| method | threshold | localisation accuracy (IoU >= 0.5) | mean IoU | "
              "pointing game |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for method in args.methods.split(","):
            scores = {t: [] for t in THRESHOLDS}
            hits = []
            request = ExplainRequest(method=method, class_from="folder")
            for upsampled, hit, true_box in pasted_maps(loaded, request, root, truth):
                hits.append(hit)
                for threshold in THRESHOLDS:
                    scores[threshold].append(box_iou(upsampled, threshold, true_box))
            for threshold, ious in scores.items():
                ious = np.array(ious)
                print(f"| {method} | {threshold:g} | {np.mean(ious >= 0.5):.1%} | "
                      f"{ious.mean():.3f} | {np.mean(hits):.1%} |")


if __name__ == "__main__":
    main()

"""Measurement behind --box-threshold's default and the README's recipe for boxes: on
labelled images made here (sample photos pasted at known boxes on smooth backgrounds,
`tests/pasted.py`), the boxes of the true class's map against the true boxes. Run by
``make bench``.

Prints, per method and layer: the localisation accuracy (IoU >= 0.5, the CAM paper's
criterion) of the largest region's box at each threshold, the pointing game (peak within
15 px of the box), MaxBoxAccV2 (Choe et al. 2020, `camcli.analysis.score.box_hits`: all regions,
thresholds 0..1, IoU 0.3 / 0.5 / 0.7) and the calibrated threshold (best at IoU 0.5).

    python bench/boxes.py [--per-class 15] [--configs gradcam,layercam@block10_add+top_activation]
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

from camcli.analysis import localise  # noqa: E402
from camcli.analysis.score import BOX_IOUS, BOX_THRESHOLDS, box_hits  # noqa: E402
from camcli.compute.models import load  # noqa: E402
from camcli.io.inputs import discover  # noqa: E402
from camcli.options import ExplainRequest  # noqa: E402
from camcli.run.session import Session  # noqa: E402

THRESHOLDS = (0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
#: method[@layer+layer...]: the default layer unless layers are given (several: fused).
CONFIGS = ("gradcam", "gradcam++", "hirescam", "layercam", "shapleycam", "eigencam",
           "ablationcam", "fullgrad", "layercam@block10_add+top_activation",
           "gradcam@block10_add+top_activation")


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
    parser.add_argument("--configs", default=",".join(CONFIGS))
    args = parser.parse_args()

    loaded = load("efficientnet-lite0")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "tree"
        made = pasted_tree(root, per_class=args.per_class, seed=1, scale=(0.25, 0.75))
        truth = {str(root / relative): box for relative, _, box in made}
        print(f"camcli boxes measurement — {len(made)} photos pasted at 25-75% of a 320x320 "
              f"background (4 classes), default model, class from the folder; "
              f"{machine()}\n")
        print("Localisation accuracy (largest region's box, IoU >= 0.5) by --box-threshold; "
              "MaxBoxAccV2 (all regions, best threshold, mean over IoU 0.3/0.5/0.7) and the "
              "calibrated threshold (best at IoU 0.5).\n")
        print("| method | layer | " + " | ".join(f"{t:g}" for t in THRESHOLDS)
              + " | pointing | MaxBoxAccV2 | calibrated |")
        print("| --- | --- | " + " | ".join("---:" for _ in THRESHOLDS) + " | ---: | ---: | ---: |")
        for config in args.configs.split(","):
            method, _, layers = config.partition("@")
            scores = {t: [] for t in THRESHOLDS}
            hits, counted = [], np.zeros((len(BOX_THRESHOLDS), len(BOX_IOUS)))
            request = ExplainRequest(method=method, class_from="folder",
                                     layers=tuple(layers.split("+")) if layers else (),
                                     max_maps=128 if method == "ablationcam" else None)
            for upsampled, hit, true_box in pasted_maps(loaded, request, root, truth):
                hits.append(hit)
                counted += box_hits(upsampled, [true_box])
                for threshold in THRESHOLDS:
                    scores[threshold].append(box_iou(upsampled, threshold, true_box))
            accuracy = counted / len(hits)
            best = accuracy.max(axis=0)
            calibrated = BOX_THRESHOLDS[int(np.argmax(accuracy[:, BOX_IOUS.index(0.5)]))]
            layer = layers.replace("+", " + ") if layers else (
                "own bias layers" if method == "fullgrad" else "default")
            if method == "ablationcam":
                method = "ablationcam (128 maps)"
            cells = " | ".join(f"{np.mean(np.array(scores[t]) >= 0.5):.0%}" for t in THRESHOLDS)
            print(f"| {method} | {layer} | {cells} | {np.mean(hits):.0%} | {best.mean():.1%} | "
                  f"{calibrated:.2f} |")


if __name__ == "__main__":
    main()

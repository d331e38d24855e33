"""Benchmark: what fusing several layers (--layer repeated) buys and costs. Run by
``make bench``; prints a Markdown table.

For Grad-CAM and LayerCAM on the default model, with the last feature map alone and fused
with earlier stages: the map's grid; speed (model and method only, 128 crops of the sample
photos, batch 32, traced first) against the same method on one layer; and, on photos
pasted at known boxes (`tests/pasted.py`, class from the folder), the pointing game and the
localisation accuracy of the boxes at the default threshold.

    python bench/layers.py [--images 128] [--per-class 15]
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
from batch import machine, make_photos  # noqa: E402
from boxes import box_iou, pasted_maps  # noqa: E402
from methods import throughput  # noqa: E402
from pasted import pasted_tree  # noqa: E402

from camcli.compute.explainer import build_explainer  # noqa: E402
from camcli.compute.models import load  # noqa: E402
from camcli.compute.models.preprocess import preprocess  # noqa: E402
from camcli.io.images import load_rgb, resize_for_model  # noqa: E402
from camcli.options import DEFAULT_BOX_THRESHOLD, ExplainRequest  # noqa: E402

LAYER_SETS = [("top_activation",), ("top_activation", "block10_add"),
              ("top_activation", "block10_add", "block4_add")]


def localisation(loaded, request: ExplainRequest, root: Path, truth: dict) -> tuple:
    hits, located = [], []
    for upsampled, hit, box in pasted_maps(loaded, request, root, truth):
        hits.append(hit)
        located.append(box_iou(upsampled, DEFAULT_BOX_THRESHOLD, box) >= 0.5)
    return np.mean(hits), np.mean(located)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--per-class", type=int, default=15)
    args = parser.parse_args()

    loaded = load("efficientnet-lite0")
    with tempfile.TemporaryDirectory() as folder:
        crops = Path(folder) / "crops"
        make_photos(crops, args.images, size=(320, 240))
        rgb = np.stack([resize_for_model(load_rgb(str(p)), loaded.input_size)
                        for p in sorted(crops.glob("*.jpg"))])
        batches = [preprocess(loaded.preprocess, rgb[i:i + args.batch_size])
                   for i in range(0, len(rgb), args.batch_size)]
        root = Path(folder) / "pasted"
        made = pasted_tree(root, per_class=args.per_class, seed=1, scale=(0.25, 0.75))
        truth = {str(root / relative): box for relative, _, box in made}
        print(f"camcli layer-fusion benchmark — default model; speed on {len(rgb)} crops of "
              f"the sample photos (batch {args.batch_size}); pointing and localisation "
              f"(threshold {DEFAULT_BOX_THRESHOLD}) on {len(made)} pasted photos; "
              f"{machine()}\n")
        print("| method | layers (fused by mean) | map grid | images/s | time vs one layer | "
              "pointing game | localisation accuracy |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for method in ("gradcam", "layercam"):
            single = None
            for layers in LAYER_SETS:
                request = ExplainRequest(method=method, layers=layers)
                explainer = build_explainer(loaded, request)
                grid = explainer.method(batches[0][:1]).maps.shape[1:]
                speed = throughput(explainer.method, batches, repeats=2)
                single = single or speed
                pointing, located = localisation(
                    loaded, ExplainRequest(method=method, layers=layers, class_from="folder"),
                    root, truth)
                print(f"| {method} | {' + '.join(layers)} | {grid[0]}x{grid[1]} | "
                      f"{speed:.1f} | {single / speed:.2f}x | {pointing:.1%} | "
                      f"{located:.1%} |")


if __name__ == "__main__":
    main()

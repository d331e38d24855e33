"""Benchmark: what --precision bf16 / fp16 cost in accuracy and buy in speed, against fp32
(the default, the model's own numbers). Run by ``make bench``; prints a Markdown table.

On the same crops of the sample photos (224x224 model inputs), for each precision: the
largest difference of any class probability from fp32, how often the top-1 class differs,
the mean correlation of the Grad-CAM maps with fp32's, and Grad-CAM throughput (model and
method only, traced first), all measured side by side in one run.

    python bench/precision.py [--images 120] [--model efficientnet-lite0] [--docs]

``--docs`` also writes the table into docs/PERFORMANCE.md (`published`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from batch import machine, make_photos  # noqa: E402
from methods import throughput  # noqa: E402
from published import published  # noqa: E402

from camcli.compute.backend import cpu_has_fast_bf16  # noqa: E402
from camcli.compute.explainer import build_explainer  # noqa: E402
from camcli.compute.methods import TOP1  # noqa: E402
from camcli.compute.models import load  # noqa: E402
from camcli.compute.models.preprocess import preprocess  # noqa: E402
from camcli.compute.targets import Targets  # noqa: E402
from camcli.io.images import load_rgb, resize_for_model  # noqa: E402
from camcli.options import ExplainRequest  # noqa: E402


def explain(model: str, precision: str, batches: list[np.ndarray]):
    loaded = load(model, precision=precision)
    explainer = build_explainer(loaded, ExplainRequest(method="gradcam"))
    results = [explainer(batch, Targets(np.full(len(batch), TOP1, np.int32)))
               for batch in batches]
    probabilities = np.concatenate([r.probabilities for r in results])
    maps = np.stack([m[0].heatmap for r in results for m in r.maps])
    inputs = [preprocess(loaded.preprocess, batch) for batch in batches]
    return probabilities, maps, throughput(explainer.method, inputs, repeats=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--docs", action="store_true",
                        help="also write the table into docs/PERFORMANCE.md")
    args = parser.parse_args()
    with published("precision.py", "docs/PERFORMANCE.md", args.docs):
        measure(args)


def measure(args) -> None:

    with tempfile.TemporaryDirectory() as folder:
        make_photos(Path(folder), args.images)
        loaded = load(args.model)
        rgb = np.stack([resize_for_model(load_rgb(str(p)), loaded.input_size)
                        for p in sorted(Path(folder).glob("*.jpg"))])
    batches = [rgb[i:i + args.batch_size] for i in range(0, len(rgb), args.batch_size)]
    print(f"camcli precision benchmark — {args.model}, {len(rgb)} crops of the sample photos, "
          f"Grad-CAM, batch {args.batch_size}; {machine()}; native bf16: "
          f"{'yes' if cpu_has_fast_bf16() else 'no (emulated)'}\n")
    print("| precision | max abs. probability difference vs fp32 | top-1 differs | "
          "map correlation with fp32 (mean / min) | images/s | speed vs fp32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    reference, reference_maps, reference_speed = explain(args.model, "fp32", batches)
    print(f"| fp32 (default) | 0 | 0 of {len(rgb)} | 1 / 1 | {reference_speed:.1f} | 1.00x |")
    for precision in ("bf16", "fp16"):
        try:
            probabilities, maps, speed = explain(args.model, precision, batches)
        except Exception as exc:  # e.g. an op without a kernel for this dtype on this device
            print(f"| {precision} | not run: {type(exc).__name__}: {str(exc)[:80]} | | | | |")
            continue
        differs = int((probabilities.argmax(1) != reference.argmax(1)).sum())
        correlations = [np.corrcoef(a.ravel(), b.ravel())[0, 1]
                        for a, b in zip(maps, reference_maps, strict=True)]
        print(f"| {precision} | {np.abs(probabilities - reference).max():.4f} | {differs} of "
              f"{len(rgb)} | {np.nanmean(correlations):.4f} / {np.nanmin(correlations):.4f} | "
              f"{speed:.1f} | {speed / reference_speed:.2f}x |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

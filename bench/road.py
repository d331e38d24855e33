"""Benchmark: ROAD's noisy linear imputation and its cost per image.

Run by ``make bench``. On photos of ``sample_images/`` resized to 224x224, with the
default model's Grad-CAM maps: the time of each of ROAD's 18 imputations (MoRF and LeRF
at the percentiles 10..90; the issue's bound: under 0.2 s each), then ``batch --metrics
road``'s cost per image against the maps alone, both measured in this run.

    python bench/road.py [--images 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from camcli.analysis import metrics  # noqa: E402
from camcli.analysis.localise import upsample  # noqa: E402
from camcli.compute.models import load  # noqa: E402
from camcli.compute.targets import Targets  # noqa: E402
from camcli.io.images import load_rgb, resize_for_model  # noqa: E402
from camcli.options import ExplainRequest, ModelRequest  # noqa: E402
from camcli.run.session import open_session  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    loaded = load(ModelRequest().model)
    size = loaded.input_size
    paths = sorted(p for p in SAMPLES.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    photos = np.stack([resize_for_model(load_rgb(str(p)), size).astype(np.float32)
                       for p in (paths * args.images)[:args.images]])
    session = open_session(ModelRequest(device="cpu"), ExplainRequest(method="gradcam"))
    explainer = session.explainer
    targets = Targets(np.full(len(photos), -1, np.int32))
    explainer(photos, targets)  # warm-up
    started = time.perf_counter()
    explained = explainer(photos, targets)
    maps_time = (time.perf_counter() - started) / len(photos)

    print(f"ROAD benchmark — {len(photos)} photos at {size[1]}x{size[0]}, default model's "
          f"Grad-CAM maps, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs\n")
    print("| removed | MoRF imputation (s, mean of photos) | LeRF imputation (s) |")
    print("| ---: | ---: | ---: |")
    times = {}
    for row, image in enumerate(photos):
        upsampled = upsample(explained.maps[row][0].heatmap, size[1], size[0])
        for kind, relevance in (("morf", upsampled), ("lerf", 1.0 - upsampled)):
            for percentile in metrics.ROAD_PERCENTILES:
                removed = relevance >= np.percentile(relevance, percentile)
                started = time.perf_counter()
                metrics.impute(image, removed, np.random.default_rng(0))
                times.setdefault((kind, percentile), []).append(time.perf_counter() - started)
    for percentile in metrics.ROAD_PERCENTILES:
        print(f"| {100 - percentile}% | {np.mean(times[('morf', percentile)]):.3f} | "
              f"{np.mean(times[('lerf', percentile)]):.3f} |")
    every = [t for values in times.values() for t in values]
    print(f"\nImputation: mean {np.mean(every):.3f} s, slowest {np.max(every):.3f} s "
          f"(bound: 0.2 s for a 224x224 image).")

    started = time.perf_counter()
    metrics.road(explainer.probability_of, photos, *explainer.first_maps(explained),
                 batch_size=max(len(photos), 32))
    road_time = (time.perf_counter() - started) / len(photos)
    print(f"Cost per image: Grad-CAM map {maps_time:.3f} s; ROAD (18 imputations + 18 "
          f"forward passes) {road_time:.2f} s, {road_time / maps_time:.0f}x the map.")


if __name__ == "__main__":
    main()

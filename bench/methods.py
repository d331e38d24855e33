"""Benchmark: throughput of every CAM method relative to a plain forward pass.

Run by ``make bench``. All timings come from one process on the same preprocessed batch
(model and method work only: no decoding or writing), after a warm-up call that traces
the TensorFlow function. Prints a Markdown table.

    python bench/methods.py [--model efficientnet-lite0] [--images 128] [--batch-size 32] [--docs]

``--docs`` also writes the table into docs/PERFORMANCE.md (`published`).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from published import published  # noqa: E402

from camcli.compute.explainer import build_explainer  # noqa: E402
from camcli.compute.methods import METHODS, Predictor  # noqa: E402
from camcli.compute.models import load  # noqa: E402
from camcli.compute.models.preprocess import preprocess  # noqa: E402
from camcli.errors import UsageProblem  # noqa: E402
from camcli.options import ExplainRequest  # noqa: E402


def has_cam_head(graph) -> bool:
    from camcli.compute.methods.cam import classifier_kernel
    from camcli.errors import CamNotApplicable

    try:
        return classifier_kernel(graph) is not None
    except CamNotApplicable:
        return False


def throughput(step, batches, repeats: int) -> float:
    step(batches[0])  # warm-up: traces the tf.function
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            step(batch)
        best = min(best, time.perf_counter() - started)
    return sum(len(b) for b in batches) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scorecam-images", type=int, default=2,
                        help="Score-CAM and Ablation-CAM are C passes per image: time them "
                             "on fewer")
    parser.add_argument("--scorecam-max-maps", type=int, default=128,
                        help="the Faster Score-CAM row's --max-maps")
    parser.add_argument("--docs", action="store_true",
                        help="also write the table into docs/PERFORMANCE.md")
    args = parser.parse_args()
    with published("methods.py", "docs/PERFORMANCE.md", args.docs):
        measure(args)


def measure(args) -> None:
    loaded = load(args.model, weights=args.weights)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.images, *loaded.input_size, 3)).astype(np.float32)
    batches = [preprocess(loaded.preprocess, images[i:i + args.batch_size])
               for i in range(0, args.images, args.batch_size)]

    explainer = build_explainer(loaded, ExplainRequest(method=None))
    predictor = Predictor(explainer.graph)
    forward = throughput(predictor, batches, args.repeats)
    print(f"camcli method benchmark — model {loaded.name}, {args.images} images of "
          f"{loaded.input_size[1]}x{loaded.input_size[0]}, batch {args.batch_size}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n")
    print("| method | images/s | time per image vs. a forward pass timed right after |")
    print("| --- | ---: | ---: |")
    print(f"| forward pass only | {forward:.1f} | 1.00x |")
    channels = int(explainer.graph.model.outputs[0].shape[-1])
    slow = ("scorecam", "ablationcam")
    runs = [(name, {}) for name in METHODS if name not in slow]
    runs += [("gradcam", {"smooth": "aug"}), ("gradcam", {"smooth": "eigen"})]
    runs += [(name, {"max_maps": kept}) for name in slow
             for kept in (None, args.scorecam_max_maps)]
    for name, options in runs:
        if name == "cam" and not has_cam_head(explainer.graph):
            print("| cam | n/a (no GAP -> Dense head) | |")
            continue
        label, todo, repeats = name, batches, args.repeats
        graph = explainer.graph
        if name in slow:
            kept = options["max_maps"] or channels
            label = f"{name} ({kept} of {channels} maps; {args.scorecam_images} images)"
            todo, repeats = [batches[0][:args.scorecam_images]], 1
        elif "smooth" in options:
            label = f"{name} --smooth {options['smooth']}"
        else:
            try:
                own = METHODS[name].own_layers(loaded.model)
            except UsageProblem:  # e.g. attention rollout on a CNN
                print(f"| {name} | n/a: does not apply to this model | |")
                continue
            if own is not None:
                graph = build_explainer(loaded, ExplainRequest(method=name)).graph
                label = (f"{name} ({len(graph.layers)} bias layers)" if name == "fullgrad"
                         else f"{name} ({METHODS[name].own_layers_are})")
        method = METHODS[name](graph, **options)
        rate = throughput(method, todo, repeats)
        # The forward pass again, right after: this machine's speed drifts during a run.
        forward = throughput(predictor, batches, args.repeats)
        print(f"| {label} | {rate:.2f} | {forward / rate:.2f}x |")


if __name__ == "__main__":
    main()

"""Benchmark: vision transformers (keras-hub) at their token layers. Run by ``make bench``;
prints Markdown tables.

1. Pointing game, method x layer, on a tiny ViT (token pooling, 3 blocks) trained here in
   seconds on four synthetic localisation tasks (`synthetic`): 64x64 noise with one
   object of the class at a random place; a hit is a map whose peak (upsampled
   bilinearly to the image) falls inside the object's box. It chose the default layer of
   token models (the last block's first LayerNormalization, where LayerCAM points best).
   The attention methods (rollout, gradrollout), which choose their blocks themselves,
   are measured on the same models and images.
2. Speed: ``batch`` with gradcam and the attention methods on a ViT-S/16-sized keras-hub
   model (random weights, 224x224), each against that model's own ``predict`` on
   preprocessed tensors.
3. Memory: peak RSS of ``camcli batch`` on 200 and 2,000 images with a small ViT.

    python bench/transformers.py [--skip-speed] [--skip-memory] [--seeds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
from batch import _MEASURE, machine, make_photos, make_photos_range  # noqa: E402

SIZE, PATCH, OBJECT, CLASSES = 64, 8, 24, 3
METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam")


TASKS = ("texture", "colour", "shape", "dark-shape")


def synthetic(count: int, seed: int, task: str = "texture"):
    """Images, labels and boxes of one of `TASKS`: a square of the class's texture
    (horizontal stripes, vertical stripes, a checkerboard) on noise; a square of the
    class's colour on dark noise; or a bright shape (square, diamond, disc) on grey
    noise, or on almost black noise. The object is 24x24 (of 64x64) at a random place."""
    rng = np.random.default_rng(seed)
    low, high = {"texture": (0, 110), "colour": (0, 60), "shape": (60, 160),
                 "dark-shape": (0, 30)}[task]
    images = rng.uniform(low, high, (count, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, CLASSES, count)
    boxes = []
    yy, xx = np.mgrid[0:OBJECT, 0:OBJECT]
    middle = (OBJECT - 1) / 2
    textures = [(yy // 3) % 2, (xx // 3) % 2, ((yy // 3) + (xx // 3)) % 2]
    shapes = [np.ones_like(yy), abs(yy - middle) + abs(xx - middle) <= middle,
              (yy - middle) ** 2 + (xx - middle) ** 2 <= middle ** 2]
    colours = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220]], np.float32)
    for i in range(count):
        y, x = rng.integers(0, SIZE - OBJECT + 1, 2)
        patch = images[i, y:y + OBJECT, x:x + OBJECT]
        if task == "texture":
            patch[:] = textures[labels[i]][..., None] * np.array([230, 200, 60]) + 20
        elif task == "colour":
            patch[:] = colours[labels[i]]
        else:  # shape, dark-shape
            patch[shapes[labels[i]].astype(bool)] = 240
        boxes.append((x, y, x + OBJECT, y + OBJECT))
    return images, labels, np.array(boxes)


def trained_vit(seed: int, task: str):
    """A 3-block ViT with a class-token head, trained to > 95% accuracy."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(SIZE, SIZE, 3), patch_size=PATCH, num_layers=3, num_heads=4,
        hidden_dim=48, mlp_dim=96)
    inputs = keras.Input((SIZE, SIZE, 3), name="photo")
    scaled = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    classifier = keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=CLASSES,
                                                     activation="softmax")
    model = keras.Model(inputs, classifier(scaled), name="vit_pointing")
    images, labels, _ = synthetic(3000, seed, task)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, batch_size=64, epochs=8, verbose=0)
    return model, classifier


#: The methods that read the attention (their own targets: every block's).
ATTENTION_METHODS = ("rollout", "gradrollout")


def pointing(model, address: str | None, method: str, images, labels, boxes
             ) -> tuple[float, float]:
    """The pointing game with the true class, and the share of all-zero maps (``address``
    None: the method's own layers)."""
    import cv2

    from camcli.compute.methods import METHODS as ALL
    from camcli.compute.models import graph

    kind = ALL[method]
    explain = kind(graph.build(model, address or kind.own_layers(model)))
    hits, blank = [], []
    for start in range(0, len(images), 50):
        result = explain(images[start:start + 50], labels[start:start + 50].astype(np.int32))
        for heatmap, (x0, y0, x1, y1) in zip(result.maps, boxes[start:start + 50],
                                             strict=True):
            up = cv2.resize(heatmap, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
            y, x = np.unravel_index(int(np.argmax(up)), up.shape)
            blank.append(heatmap.max() == 0)
            hits.append(heatmap.max() > 0 and x0 <= x < x1 and y0 <= y < y1)
    return float(np.mean(hits)), float(np.mean(blank))


def pointing_table(seeds: int, tasks: list[str]) -> None:
    from camcli.compute.models import graph

    print(f"### Pointing game on trained tiny ViTs ({SIZE}x{SIZE}, patches of {PATCH}, 3 "
          f"blocks, class-token head): true class, 300 test images a task, {seeds} trained "
          "models a task (share of all-zero maps in brackets)\n")
    results: dict = {}
    names = ["transformer_block_1:input", "transformer_block_2:input",
             "transformer_block_3:input", "transformer_block_3/ln_1", "transformer_block_3"]
    # (block 2's output is block 3's input: the same tensor, not listed twice)
    for task in tasks:
        accuracy = []
        for seed in range(seeds):
            model, classifier = trained_vit(seed, task)
            images, labels, boxes = synthetic(300, 1000 + seed, task)
            predicted = np.argmax(model.predict(images, verbose=0), -1)
            accuracy.append(float(np.mean(predicted == labels)))
            encoder = f"{classifier.name}/{classifier.backbone.name}/vit_encoder"
            default = graph.build(model).layers[0]
            for method in METHODS:
                for name in names:
                    hit, blank = pointing(model, f"{encoder}/{name}", method, images, labels,
                                          boxes)
                    results.setdefault((task, method, name), []).append((hit, blank))
            for method in ATTENTION_METHODS:
                hit, blank = pointing(model, None, method, images, labels, boxes)
                results.setdefault((task, method, "every block's attention"), []).append(
                    (hit, blank))
        print(f"- {task}: test accuracy {np.mean(accuracy):.1%}")
    print(f"\ndefault layer: {default} (found automatically)\n")
    for task in [*tasks, "all"]:
        print(f"{'all tasks' if task == 'all' else 'task: ' + task}\n")
        print("| method | " + " | ".join(names) + " |")
        print("| --- |" + " ---: |" * len(names))
        for method in METHODS:
            cells = []
            for name in names:
                pairs = [pair for (t, m, n), kept in results.items()
                         if m == method and n == name and task in (t, "all") for pair in kept]
                hits, blanks = zip(*pairs, strict=True)
                cells.append(f"{np.mean(hits):.0%} ({np.mean(blanks):.0%})")
            print(f"| {method} | " + " | ".join(cells) + " |")
        print()
    print("The attention methods (every block's attention), by task; the worst task last\n")
    print("| method | " + " | ".join(tasks) + " | worst |")
    print("| --- |" + " ---: |" * (len(tasks) + 1))
    for method in ATTENTION_METHODS:
        rates = [np.mean([hit for hit, _ in results[task, method, "every block's attention"]])
                 for task in tasks]
        print(f"| {method} | " + " | ".join(f"{r:.0%}" for r in rates) +
              f" | {min(rates):.0%} |")
    print()


def vit_small(path: Path) -> None:
    """A ViT-S/16-sized keras-hub classifier (random weights), saved to ``path``."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(224, 224, 3), patch_size=16, num_layers=12, num_heads=6,
        hidden_dim=384, mlp_dim=1536)
    keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=1000,
                                        activation="softmax").save(path)


def speed(work: Path, images: int, batch_size: int,
          methods: tuple[str, ...] = ("gradcam", *ATTENTION_METHODS)) -> None:
    import keras

    from camcli.options import BatchOptions, ExplainRequest, ModelRequest
    from camcli.run.batch import run_batch
    from camcli.run.session import open_session

    path = work / "vit_s16.keras"
    vit_small(path)
    photos = work / "photos"
    make_photos(photos, images, size=(320, 240))
    model = keras.saving.load_model(path)
    rng = np.random.default_rng(1)
    raw = rng.uniform(0, 255, (images, 224, 224, 3)).astype(np.float32)
    model.predict(raw[:batch_size], batch_size=batch_size, verbose=0)
    print(f"### Speed: ViT-S/16-sized keras-hub classifier, random weights, 224x224, "
          f"{images} JPEGs, batch {batch_size}\n")
    print("| method | model.predict (img/s) | batch, end to end (img/s) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for method in methods:
        session = open_session(ModelRequest(model=str(path), device="cpu"),
                               ExplainRequest(method=method))
        warm = np.zeros((1, 224, 224, 3), np.float32)
        session.explainer(warm, session.plan.targets([None]))  # traced once, as in a run
        started = time.perf_counter()  # the model's own predict right before: speed drifts
        model.predict(raw, batch_size=batch_size, verbose=0)
        ceiling = images / (time.perf_counter() - started)
        started = time.perf_counter()
        summary = run_batch([str(photos)], session, BatchOptions(
            out_dir=str(work / f"out-{method}"), batch_size=batch_size))
        batch = summary.total / (time.perf_counter() - started)
        assert summary.written == images, summary
        print(f"| {method} | {ceiling:.1f} | {batch:.1f} | {batch / ceiling:.2f}x |",
              flush=True)
    default = open_session(ModelRequest(model=str(path), device="cpu")).explainer.layer
    print(f"\ngradcam's target layer: the default, {default}\n")


def memory(work: Path, counts: list[int]) -> None:
    import keras_hub

    path = work / "vit_small.keras"
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(64, 64, 3), patch_size=8, num_layers=3, num_heads=4, hidden_dim=48,
        mlp_dim=96)
    keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=10,
                                        activation="softmax").save(path)
    photos = work / "mem-photos"
    print("### Memory: peak RSS of camcli batch with a small ViT, 160x120 JPEGs\n")
    print("| images | peak RSS (MiB) | wall time (s) |")
    print("| ---: | ---: | ---: |")
    made, results = 0, {}
    for count in counts:
        make_photos_range(photos, made, count)
        made = max(made, count)
        subset = work / f"subset-{count}"
        subset.mkdir()
        for p in sorted(photos.glob("*.jpg"))[:count]:
            os.symlink(p, subset / p.name)
        command = [sys.executable, "-c", _MEASURE, str(subset), str(work / f"out-{count}"),
                   str(path)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results[count] = int(done.stdout.strip().splitlines()[-1])
        print(f"| {count} | {results[count] / 1024:.0f} | "
              f"{time.perf_counter() - started:.0f} |", flush=True)
    print(f"\npeak RSS for {counts[-1]} images / for {counts[0]}: "
          f"{results[counts[-1]] / results[counts[0]]:.3f}\n")


def main() -> None:
    import logging

    # The all-zero gradients at the last block's output are in the table; not said 6 times.
    logging.getLogger("camcli").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--memory", default="200,2000", metavar="N1,N2")
    parser.add_argument("--skip-pointing", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    print(f"camcli transformer benchmark — {machine()}\n")
    work = Path(tempfile.mkdtemp(prefix="camcli-vit-"))
    try:
        if not args.skip_pointing:
            pointing_table(args.seeds, args.tasks.split(","))
        if not args.skip_speed:
            speed(work, args.images, args.batch_size)
        if not args.skip_memory:
            memory(work, [int(n) for n in args.memory.split(",")])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

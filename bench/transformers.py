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


#: The trained models of the pointing bench: a family each, 3 blocks, 8x8 patches of 8.
FAMILIES = ("vit", "vit-gap", "deit", "dinov2")


def tiny(family: str):
    """An untrained classifier of ``family``, [0, 255] images in: a ViT with a class-token
    head, a ViT with a mean-pooled head (4 blocks), a DeiT (class and distillation
    tokens), or a DINOv2 backbone with 4 registers under a Dense head on its class
    token."""
    import keras
    import keras_hub

    inputs = keras.Input((SIZE, SIZE, 3), name="photo")
    scaled = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    if family in ("vit", "vit-gap"):
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(SIZE, SIZE, 3), patch_size=PATCH,
            num_layers=3 if family == "vit" else 4, num_heads=4, hidden_dim=48, mlp_dim=96)
        outputs = keras_hub.models.ViTImageClassifier(
            backbone=backbone, num_classes=CLASSES, activation="softmax",
            pooling="token" if family == "vit" else "gap")(scaled)
    elif family == "deit":
        backbone = keras_hub.models.DeiTBackbone(
            image_shape=(SIZE, SIZE, 3), patch_size=PATCH, num_layers=3, num_heads=4,
            hidden_dim=48, intermediate_dim=96)
        outputs = keras_hub.models.DeiTImageClassifier(
            backbone=backbone, num_classes=CLASSES, activation="softmax")(scaled)
    else:
        backbone = keras_hub.models.DINOV2Backbone(
            patch_size=PATCH, num_layers=3, hidden_dim=48, num_heads=4, intermediate_dim=96,
            num_register_tokens=4, image_shape=(SIZE, SIZE, 3),
            position_embedding_shape=(SIZE, SIZE, 3))
        outputs = keras.layers.Dense(CLASSES, activation="softmax", name="predictions")(
            backbone(scaled)[:, 0])
    return keras.Model(inputs, outputs, name=family.replace("-", "_"))


def trained(family: str, seed: int, task: str, epochs: int = 8, most: int = 32):
    """`tiny` ``family``, trained on 3,000 images of ``task``: ``epochs`` at a time until
    it classifies 95% of 300 validation images right, or ``most`` epochs."""
    import keras

    keras.utils.set_random_seed(seed)
    model = tiny(family)
    images, labels, _ = synthetic(3000, seed, task)
    held, held_labels, _ = synthetic(300, 2000 + seed, task)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    for _ in range(0, most, epochs):
        model.fit(images, labels, batch_size=64, epochs=epochs, verbose=0)
        predicted = np.argmax(model.predict(held, verbose=0), -1)
        if np.mean(predicted == held_labels) >= 0.95:
            break
    return model


#: The methods that read the attention (their own targets: every block's).
ATTENTION_METHODS = ("rollout", "gradrollout", "legrad")
#: What is compared for the default of a token model: a method, where (None: the
#: method's own targets; ``norm``: the last block's first LayerNormalization; ``input``:
#: the last block's input) and its options (rollout's: vit-explain's defaults, its
#: recommended max fusion with 90% discarded, and the variants between them that a first
#: run of this table singled out).
COMBINATIONS = (("rollout", None, ()), ("rollout", None, (("discard_ratio", 0.8),)),
                ("rollout", None, (("discard_ratio", 0.9),)),
                ("rollout", None, (("head_fusion", "max"), ("discard_ratio", 0.5))),
                ("rollout", None, (("head_fusion", "max"), ("discard_ratio", 0.9))),
                ("gradrollout", None, ()), ("legrad", None, ()),
                ("layercam", "norm", ()), ("layercam", "input", ()), ("gradcam", "norm", ()))


def where(model, place: str | None):
    """The address of ``place`` in ``model`` (None: the method's own)."""
    from camcli.compute.models import addresses, graph

    if place is None:
        return None
    if place == "norm":
        return graph.build(model).layers[0]
    return [info.address for info in addresses.layers(model)
            if info.address.endswith(":input")][-1]


def explained(model, address: str | None, method: str, images, labels, options=()):
    """The maps of the true classes."""
    from camcli.compute.methods import METHODS
    from camcli.compute.models import graph

    kind = METHODS[method]
    explain = kind(graph.build(model, address or kind.own_layers(model)), **dict(options))
    return np.concatenate([explain(images[start:start + 50],
                                   labels[start:start + 50].astype(np.int32)).maps
                           for start in range(0, len(images), 50)])


def pointing(maps, boxes) -> float:
    """The pointing game: the share of maps whose peak (upsampled bilinearly to the
    image) falls inside the object's box (an all-zero map misses)."""
    import cv2

    hits = []
    for heatmap, (x0, y0, x1, y1) in zip(maps, boxes, strict=True):
        up = cv2.resize(heatmap, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        y, x = np.unravel_index(int(np.argmax(up)), up.shape)
        hits.append(heatmap.max() > 0 and x0 <= x < x1 and y0 <= y < y1)
    return float(np.mean(hits))


def deletion(model, maps, images, labels, steps: int = 10) -> float:
    """Mean deletion AUC (`camcli.analysis.metrics`: the most salient pixels greyed out
    first; lower is better) of the true class."""
    from camcli.analysis.metrics import faithfulness

    def probability_of(batch, classes):
        return model.predict(batch, verbose=0)[np.arange(len(batch)), classes]

    original = probability_of(images, labels)
    return float(np.mean(faithfulness(probability_of, images, maps, labels, original,
                                      steps, batch_size=256).deletion_auc))


def pointing_table(seeds: int, tasks: list[str], families: list[str],
                   deletion_images: int) -> None:
    import keras

    print(f"### Pointing game on trained tiny transformers ({SIZE}x{SIZE}, patches of "
          f"{PATCH}): true class, 300 test images a task, {seeds} trained model(s) a "
          f"family and task; deletion AUC on the first {deletion_images} (lower is "
          "better)\n")
    hits: dict = {}
    deleted: dict = {}
    for family in families:
        for task in tasks:
            accuracy = []
            for seed in range(seeds):
                model = trained(family, seed, task)
                images, labels, boxes = synthetic(300, 1000 + seed, task)
                predicted = np.argmax(model.predict(images, verbose=0), -1)
                accuracy.append(float(np.mean(predicted == labels)))
                for method, place, options in COMBINATIONS:
                    maps = explained(model, where(model, place), method, images, labels,
                                     options)
                    key = (family, task, method, place, options)
                    hits.setdefault(key, []).append(pointing(maps, boxes))
                    deleted.setdefault(key, []).append(deletion(
                        model, maps[:deletion_images], images[:deletion_images],
                        labels[:deletion_images]))
                keras.backend.clear_session()
            print(f"- {family}, {task}: test accuracy {np.mean(accuracy):.1%}", flush=True)
    pairs = [(f, t) for f in families for t in tasks]
    print("\n| method | where | " + " | ".join(f"{f} {t}" for f, t in pairs) +
          " | mean | **worst** | deletion AUC (mean) |")
    print("| --- | --- |" + " ---: |" * (len(pairs) + 3))
    worst = {}
    for combination in COMBINATIONS:
        method, place, options = combination
        rates = [np.mean(hits[(f, t, *combination)]) for f, t in pairs]
        worst[combination] = min(rates)
        auc = np.mean([np.mean(deleted[(f, t, *combination)]) for f, t in pairs])
        print(f"| {label(combination)} | {place or 'its own'} | " +
              " | ".join(f"{r:.0%}" for r in rates) +
              f" | {np.mean(rates):.0%} | **{min(rates):.0%}** | {auc:.3f} |")
    best = max(worst, key=worst.get)
    print(f"\nbest worst-task pointing: {label(best)} ({best[1] or 'its own targets'}), "
          f"{worst[best]:.0%}\n")
    _say_default(best)


def label(combination) -> str:
    """``rollout --discard-ratio 0.9``: a combination as its options."""
    from camcli.options import as_flags

    method, _, options = combination
    return f"{method} {as_flags(options)}".strip()


def _say_default(best) -> None:
    """Whether camcli's default for a transformer is the bench's best."""
    from camcli.options import TRANSFORMER_METHOD, TRANSFORMER_OPTIONS

    mine = (TRANSFORMER_METHOD, None, TRANSFORMER_OPTIONS)
    said = "is" if mine == best else "is NOT"
    print(f"camcli's default for a transformer, {label(mine)}, {said} the best.\n")


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
          methods: tuple[str, ...] = ("auto", "gradcam", *ATTENTION_METHODS)) -> None:
    import keras

    from camcli.options import BatchOptions, ExplainRequest, ModelRequest
    from camcli.run.batch import run_batch, settings_of
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
        # Warmed as predict is, by one full batch: traced, and its memory grown (the
        # first full batch of gradrollout, whose backward runs through every block,
        # takes ~5x a later one on this machine).
        session.explainer(raw[:batch_size], session.plan.targets([None] * batch_size))
        started = time.perf_counter()  # the model's own predict right before: speed drifts
        model.predict(raw, batch_size=batch_size, verbose=0)
        ceiling = images / (time.perf_counter() - started)
        started = time.perf_counter()
        summary = run_batch([str(photos)], session, BatchOptions(
            out_dir=str(work / f"out-{method}"), batch_size=batch_size))
        batch = summary.total / (time.perf_counter() - started)
        assert summary.written == images, summary
        name = method if method != "auto" else \
            f"auto: {session.request.method} ({settings_of(session.request)})"
        print(f"| {name} | {ceiling:.1f} | {batch:.1f} | {batch / ceiling:.2f}x |",
              flush=True)
    default = open_session(ModelRequest(model=str(path), device="cpu"),
                           ExplainRequest(method="gradcam")).explainer.layer
    print(f"\ngradcam's target layer: the default, {default}\n")


def memory(work: Path, counts: list[int],
           methods: tuple[str, ...] = ("auto", *ATTENTION_METHODS[1:])) -> None:
    """Peak RSS of ``camcli batch`` (a fresh process each) on ``counts`` images, for each
    method (``auto``: the default, rollout on this model)."""
    import keras_hub

    path = work / "vit_small.keras"
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(64, 64, 3), patch_size=8, num_layers=3, num_heads=4, hidden_dim=48,
        mlp_dim=96)
    keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=10,
                                        activation="softmax").save(path)
    photos = work / "mem-photos"
    print("### Memory: peak RSS of camcli batch with a small ViT (3 blocks), 160x120 "
          "JPEGs\n")
    print("| method | images | peak RSS (MiB) | wall time (s) |")
    print("| --- | ---: | ---: | ---: |")
    make_photos_range(photos, 0, max(counts))
    for count in counts:
        subset = work / f"subset-{count}"
        subset.mkdir()
        for p in sorted(photos.glob("*.jpg"))[:count]:
            os.symlink(p, subset / p.name)
    ratios = []
    for method in methods:
        results = {}
        for count in counts:
            command = [sys.executable, "-c", _MEASURE, str(work / f"subset-{count}"),
                       str(work / f"out-{method}-{count}"), str(path), "--method", method]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results[count] = int(done.stdout.strip().splitlines()[-1])
            print(f"| {method} | {count} | {results[count] / 1024:.0f} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)
        ratios.append(f"{method} {results[counts[-1]] / results[counts[0]]:.3f}")
    print(f"\npeak RSS for {counts[-1]} images / for {counts[0]}: {', '.join(ratios)}\n")


def main() -> None:
    import logging

    # The all-zero gradients at the last block's output are in the table; not said 6 times.
    logging.getLogger("camcli").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--deletion-images", type=int, default=60)
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
            pointing_table(args.seeds, args.tasks.split(","), args.families.split(","),
                           args.deletion_images)
        if not args.skip_speed:
            speed(work, args.images, args.batch_size)
        if not args.skip_memory:
            memory(work, [int(n) for n in args.memory.split(",")])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

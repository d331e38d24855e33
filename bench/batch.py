"""Benchmark: is ``camcli batch`` as fast as the model allows, and how much faster than the
per-image loop the tutorials use? Run by ``make bench``; prints a Markdown table.

For each model, from one run on the same generated photos (sample photos, randomly
cropped and scaled to about 640x480 JPEGs), at the same batch size and precision:

1. ceiling: model-only forward passes on already-preprocessed tensors;
2. ``camcli batch`` end to end (walk, decode, preprocess, model, map, overlay, JPEG,
   manifest) for cam and gradcam, and its ratio to the ceiling;
3. the naive loop (per image: ``model.predict`` on a feature model, ``model.predict`` on
   the full model, a Python loop over channels, resize, ``cv2.imwrite``) and camcli's
   speed-up over it.

The TensorFlow functions are traced before timing (a long run amortises tracing).

    python bench/batch.py [--images 256] [--models efficientnet-lite0,resnet50]
    python bench/batch.py --memory 2000,20000    # peak RSS of batch runs (tiny model)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from methods import throughput  # noqa: E402  (bench/methods.py: best-of-N timing)
from PIL import Image  # noqa: E402
from published import published  # noqa: E402  (bench/published.py: --docs)

REPO = Path(__file__).resolve().parent.parent


def make_photos(folder: Path, count: int, size=(640, 480), seed: int = 0) -> None:
    """``count`` JPEGs cut from the sample photos (random crops, scaled to ``size``)."""
    rng = np.random.default_rng(seed)
    sources = [np.asarray(Image.open(p).convert("RGB"))
               for p in sorted((REPO / "sample_images").glob("*.jpg"))]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        source = sources[i % len(sources)]
        h, w = source.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = cv2.resize(source[y:y + ch, x:x + cw], size, interpolation=cv2.INTER_AREA)
        Image.fromarray(crop).save(folder / f"photo_{i:06d}.jpg", quality=90)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def ceiling(session, batch_size: int, repeats: int = 3) -> float:
    from camcli.compute.methods import Predictor
    from camcli.compute.models.preprocess import preprocess

    loaded = session.loaded
    rng = np.random.default_rng(1)
    raw = rng.uniform(0, 255, (batch_size * 4, *loaded.input_size, 3)).astype(np.float32)
    batches = [preprocess(loaded.preprocess, raw[i:i + batch_size])
               for i in range(0, len(raw), batch_size)]
    return throughput(Predictor(session.explainer.graph), batches, repeats)


def end_to_end(session, photos: Path, out: Path, batch_size: int, workers: int) -> float:
    from camcli.options import BatchOptions
    from camcli.run.batch import run_batch

    shutil.rmtree(out, ignore_errors=True)
    warm = np.zeros((1, *session.loaded.input_size, 3), np.float32)
    session.explainer(warm, session.plan.targets([None]))  # trace once, as a long run would
    started = time.perf_counter()
    summary = run_batch([str(photos)], session,
                        BatchOptions(out_dir=str(out), batch_size=batch_size, workers=workers))
    seconds = time.perf_counter() - started
    assert summary.failed == 0 and summary.written == summary.total
    return summary.total / seconds


def naive_loop(loaded, photos: Path, out: Path, count: int, layer: str) -> float:
    """The Keras-tutorial way, one image at a time."""
    import keras

    from camcli.compute.models.preprocess import preprocess

    out.mkdir(parents=True, exist_ok=True)
    model = loaded.model
    features_model = keras.Model(model.inputs, model.get_layer(layer).output)
    kernel = model.layers[-1].get_weights()[0]
    paths = sorted(photos.glob("*.jpg"))[:count]
    started = time.perf_counter()
    for path in paths:
        image = keras.utils.load_img(path, target_size=loaded.input_size)
        x = preprocess(loaded.preprocess, keras.utils.img_to_array(image)[None])
        features = features_model.predict(x, verbose=0)[0]
        predictions = model.predict(x, verbose=0)[0]
        weights = kernel[:, int(np.argmax(predictions))]
        cam = np.zeros(features.shape[:2], np.float32)
        for channel in range(features.shape[2]):
            cam += weights[channel] * features[:, :, channel]
        cam = np.maximum(cam, 0) / (cam.max() + 1e-7)
        original = cv2.imread(str(path))
        heatmap = cv2.resize(cam, (original.shape[1], original.shape[0]))
        heatmap = cv2.applyColorMap(np.uint8(255 * heatmap), cv2.COLORMAP_JET)
        cv2.imwrite(str(out / path.name), cv2.addWeighted(heatmap, 0.4, original, 0.6, 0))
    return len(paths) / (time.perf_counter() - started)


def speed(args) -> None:
    from camcli.compute.backend import select_device
    from camcli.compute.models import load
    from camcli.options import ExplainRequest
    from camcli.run.session import Session

    select_device("auto")
    work = Path(tempfile.mkdtemp(prefix="camcli-bench-"))
    try:
        photos = work / "photos"
        make_photos(photos, args.images)
        print(f"camcli batch benchmark — {args.images} JPEGs of 640x480, batch "
              f"{args.batch_size}, {args.workers} worker threads, fp32\n{machine()}\n")
        print("| model | ceiling: forward only (img/s) | batch cam (img/s) | cam / ceiling | "
              "batch gradcam (img/s) | gradcam / ceiling | naive loop (img/s) | "
              "speed-up cam / naive |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name in args.models.split(","):
            weights = "imagenet" if name == "efficientnet-lite0" else "none"
            loaded = load(name, weights=weights)
            top = ceiling(Session.create(loaded, ExplainRequest(method=None)), args.batch_size)
            rates = {}
            for method in ("cam", "gradcam"):
                session = Session.create(loaded, ExplainRequest(method=method))
                rates[method] = end_to_end(session, photos, work / f"out-{name}-{method}",
                                           args.batch_size, args.workers)
            naive = naive_loop(loaded, photos, work / f"naive-{name}", args.naive_images,
                               Session.create(loaded, ExplainRequest(method="cam")).explainer.layer)
            print(f"| {name} | {top:.1f} | {rates['cam']:.1f} | {rates['cam'] / top:.2f} | "
                  f"{rates['gradcam']:.1f} | {rates['gradcam'] / top:.2f} | {naive:.2f} | "
                  f"{rates['cam'] / naive:.1f}x |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def memory(args) -> None:
    """Peak RSS of ``camcli batch`` on N generated images, for each N, with a tiny model
    (the pipeline's memory, not the model's)."""
    work = Path(tempfile.mkdtemp(prefix="camcli-mem-"))
    try:
        import keras

        inputs = keras.Input((64, 64, 3))
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model_path = work / "tiny.keras"
        keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(model_path)
        counts = [int(n) for n in args.memory.split(",")]
        photos = work / "photos"
        print(f"camcli batch peak memory — tiny model, 160x120 JPEGs\n{machine()}\n")
        print("| images | peak RSS (MiB) | wall time (s) |")
        print("| ---: | ---: | ---: |")
        made = 0
        results = {}
        for count in counts:
            make_photos_range(photos, made, count)
            made = max(made, count)
            out = work / f"out-{count}"
            listing = work / f"list-{count}.txt"
            files = sorted(photos.glob("*.jpg"))[:count]
            listing.write_text("\n".join(str(p) for p in files))
            subset = work / f"subset-{count}"
            subset.mkdir()
            for p in files:
                os.symlink(p, subset / p.name)
            command = [sys.executable, "-c", _MEASURE, str(subset), str(out), str(model_path)]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results[count] = int(done.stdout.strip().splitlines()[-1])
            print(f"| {count} | {results[count] / 1024:.0f} | "
                  f"{time.perf_counter() - started:.0f} |", flush=True)
        if len(counts) >= 2:
            first, last = results[counts[0]], results[counts[-1]]
            print(f"\npeak RSS for {counts[-1]} images / for {counts[0]}: {last / first:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_photos_range(folder: Path, start: int, stop: int) -> None:
    rng = np.random.default_rng(start)
    folder.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    for i in range(start, stop):
        image = np.roll(base, i % 160, axis=1)
        cv2.imwrite(str(folder / f"p{i:07d}.jpg"), image)


# Run in a fresh process per N, so each peak is its own: prints the process's peak RSS
# (KiB), VmHWM from /proc/self/status. Not getrusage's ru_maxrss: Linux carries the
# parent's peak over a fork and exec, so a child of a big bench process reports the
# parent's. Arguments: the photos, the output folder, the model, then more of camcli
# batch's options.
_MEASURE = """
import sys
from camcli.cli import main
try:
    main(["batch", sys.argv[1], "--out", sys.argv[2], "--model", sys.argv[3], "-q",
          "--preprocess", "scale01", "--device", "cpu", *sys.argv[4:]])
except SystemExit as exit:
    assert exit.code == 0, exit.code
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--naive-images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", default="efficientnet-lite0,resnet50")
    parser.add_argument("--memory", default=None, metavar="N1,N2",
                        help="instead: peak RSS of batch runs on N1, N2, ... images")
    parser.add_argument("--docs", action="store_true",
                        help="also write the speed table into docs/PERFORMANCE.md")
    args = parser.parse_args()
    if args.memory:
        memory(args)
    else:
        with published("batch.py", "docs/PERFORMANCE.md", args.docs):
            speed(args)


if __name__ == "__main__":
    main()

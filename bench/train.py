"""Benchmark: ``camcli train`` on a generated labelled tree, with and without --augment.
Run by ``make bench``; prints a Markdown table.

The tree: the six sample photos as six classes (named as a user would: ``my_cat``,
``Coffee Cup``...), each pasted ``--per-class`` times as random crops (60-100% of each
side) at 35-70% of a 320x320 smooth random background (`tests/pasted.py`). Another 10
pastes per class, never trained on, are explained with CAM on the trained model, true
class from the folder, and scored against their pasted boxes with ``camcli score``.
Every step is the real command line, in a fresh process, timed end to end.

The shortcut table (the head's optimisation defaults): three small Clever-Hans trees
(`watermarked_tree`: 2 x 40 pictures, 85% of class ``a`` watermarked in a corner, seeds
1-3), trained in this process with the former settings (Adam at 0.001, early stopping from
the first epoch) and the current ones (0.01, not before 60 steps); each model predicts 60
held-out pictures of the same kind (seed + 100): a model that learnt the mark calls the
marked ones ``a`` and the clean ones ``b``.

    python bench/train.py [--per-class 70] [--skip-shortcut]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from batch import machine  # noqa: E402
from pasted import pasted_tree, watermarked_tree  # noqa: E402

PHOTOS = {"cat.jpg": "my_cat", "coffee.jpg": "Coffee Cup", "camera.png": "camera-rig",
          "motorcycle.jpg": "bike", "rocket.jpg": "rocket", "astronaut.jpg": "astronaut"}


def camcli(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "camcli", *args], capture_output=True,
                          text=True, check=True, cwd=REPO)
    return time.perf_counter() - started, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=70)
    parser.add_argument("--skip-shortcut", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        pasted_tree(work / "tree", per_class=args.per_class, seed=1, scale=(0.35, 0.7),
                    photos=PHOTOS, crop=0.6)
        held = pasted_tree(work / "held_out", per_class=10, seed=2, scale=(0.35, 0.7),
                           photos=PHOTOS, crop=0.6)
        truth = work / "truth.csv"
        truth.write_text("input,class,x0,y0,x1,y1\n" + "".join(
            f"{relative},{relative.split('/')[0]},{x0},{y0},{x1},{y1}\n"
            for relative, _, (x0, y0, x1, y1) in held))
        print(f"camcli train benchmark — {6 * args.per_class} images in 6 classes (default "
              f"model as the backbone, validation split 0.1, seed 0); CAM on 60 held-out "
              f"pastes scored against their boxes; {machine()}\n")
        print("| training | wall time (s) | epochs | validation top-1 | held-out top-1 | "
              "pointing game (CAM) | localisation (CAM, IoU >= 0.5) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, extra in (("plain", []), ("--augment", ["--augment"])):
            model = work / f"{name.strip('-')}.keras"
            seconds, _ = camcli("train", str(work / "tree"), "-o", str(model), "-q",
                                *extra)
            report = json.loads(model.with_suffix(".json").read_text())
            out = work / f"heatmaps-{name.strip('-')}"
            camcli("batch", str(work / "held_out"), "--out", str(out), "--model", str(model),
                   "--method", "cam", "--class-from", "folder", "--boxes", "-q")
            _, scored = camcli("score", str(out), "--truth", str(truth), "--format", "json")
            overall = json.loads(scored)["overall"]
            print(f"| {name} | {seconds:.1f} | {report['epochs']} | {report['val_top1']:.1%} "
                  f"| {overall['top1']:.1%} | {overall['pointing']:.1%} | "
                  f"{overall['localisation']:.1%} |")
    if not args.skip_shortcut:
        shortcut()


def shortcut() -> None:
    """The shortcut table (see the module docstring)."""
    from camcli.options import ModelRequest, TrainOptions
    from camcli.run import train as training

    print("\n| head settings | tree seed | epochs | held-out marked -> a | held-out clean -> b "
          "| held-out top-1 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    settings = (("former: Adam 0.001, stopping from epoch 1", 1e-3, 0),
                ("now: Adam 0.01, stopping after 60 steps", TrainOptions("x").learning_rate,
                 training.MIN_STEPS))
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for seed in (1, 2, 3):
            watermarked_tree(work / f"tree{seed}", seed=seed)
            marked = {str(work / f"held{seed}" / relative) for relative in
                      watermarked_tree(work / f"held{seed}", per_class=30, seed=seed + 100)}
            for name, rate, steps in settings:
                training.MIN_STEPS = steps
                model = str(work / f"m{seed}-{steps}.keras")
                report = training.train(str(work / f"tree{seed}"), ModelRequest(),
                                        TrainOptions(model, learning_rate=rate))
                _, predicted = camcli("predict", str(work / f"held{seed}"), "--model", model,
                                      "--format", "json")
                rows = {row["input"]: row["top"][0]["label"] for row in json.loads(predicted)}
                hits = sum(rows[p] == "a" for p in marked)
                clean = [p for p in rows if p not in marked]
                right = sum(rows[p] == "b" for p in clean)
                print(f"| {name} | {seed} | {report.epochs} | {hits}/{len(marked)} | "
                      f"{right}/{len(clean)} | {(hits + right) / len(rows):.1%} |")


if __name__ == "__main__":
    main()

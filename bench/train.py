"""Benchmark: ``camcli train`` on a generated labelled tree, with and without --augment.
Run by ``make bench``; prints a Markdown table.

The tree: the six sample photos as six classes (named as a user would: ``my_cat``,
``Coffee Cup``...), each pasted ``--per-class`` times as random crops (60-100% of each
side) at 35-70% of a 320x320 smooth random background (`tests/pasted.py`). Another 10
pastes per class, never trained on, are explained with CAM on the trained model, true
class from the folder, and scored against their pasted boxes with ``camcli score``.
Every step is the real command line, in a fresh process, timed end to end.

    python bench/train.py [--per-class 70]
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
from pasted import pasted_tree  # noqa: E402

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


if __name__ == "__main__":
    main()

"""Benchmark: what ``camcli evaluate`` costs, as a multiple of one ``camcli batch --method
gradcam`` pass over the same photos, and how its time grows with the sample.

Run by ``make bench``; prints Markdown tables. Generated photos (crops of the sample
photos, 640x480 JPEGs), the default model, each command in a fresh process as a user runs
it (so both pay for starting Python and TensorFlow):

1. ``camcli batch --method gradcam`` on ``--images`` photos, then ``camcli evaluate`` on
   the same photos with ``--methods`` (6 gradient methods) and ``--mprt-steps`` (10):
   the evaluation's time as a multiple of the batch pass, and its phases (evaluate.json's
   ``seconds``). The expected order is, per method, 1 + steps + K + ROAD's cost passes.
2. ``camcli evaluate`` with ``--growth-methods`` at ``--images`` and at ``--more``
   photos: the time per image at each, end to end and without the start-up and the
   model's loading (evaluate.json's ``measures`` + ``randomisation``); linear growth keeps
   the latter flat.

    python bench/evaluate.py [--images 64] [--more 256] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from batch import REPO, machine, make_photos

GRADIENT_METHODS = "gradcam,gradcam++,xgradcam,hirescam,layercam,guidedbackprop"


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "camcli", *command, "-q"], check=True, cwd=REPO,
                   capture_output=True)
    return time.perf_counter() - started


def evaluate(photos: Path, out: Path, methods: str, steps: int, sample: int
             ) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    seconds = timed(["evaluate", str(photos), "--out", str(out), "--methods", methods,
                     "--mprt-steps", str(steps), "--sample", str(sample), "--device", "cpu"])
    return seconds, json.loads((out / "evaluate.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--more", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--methods", default=GRADIENT_METHODS)
    parser.add_argument("--growth-methods", default="gradcam")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="camcli-evaluate-"))
    try:
        few, many = work / "few", work / "many"
        make_photos(few, args.images)
        make_photos(many, args.more)
        batch = timed(["batch", str(few), "--out", str(work / "batch"), "--method", "gradcam",
                       "--device", "cpu"])
        whole, document = evaluate(few, work / "eval", args.methods, args.steps, args.images)
        growth = [evaluate(folder, work / "grow", args.growth_methods, args.steps, count)
                  for folder, count in ((few, args.images), (many, args.more))]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    methods = args.methods.split(",")
    steps = len(document["methods"][0]["sanity"]["steps"])
    print(f"camcli evaluate benchmark — {args.images} JPEGs of 640x480, default model, "
          f"a fresh process per command; {machine()}\n")
    print(f"| command | seconds | vs batch |\n| --- | ---: | ---: |\n"
          f"| `camcli batch --method gradcam` | {batch:.1f} | 1.0x |\n"
          f"| `camcli evaluate --methods {args.methods} --mprt-steps {args.steps}` "
          f"({len(methods)} methods, {steps} steps) | {whole:.1f} | {whole / batch:.0f}x |\n")
    phases = document["seconds"]
    print("Phases of the evaluation (evaluate.json's `seconds`): " + ", ".join(
        f"{name} {value:.1f} s" for name, value in phases.items())
        + f"; per method and image: {whole / len(methods) / args.images:.2f} s "
        f"(measures {phases['measures'] / len(methods) / args.images:.2f} s, randomisation "
        f"{phases['randomisation'] / len(methods) / args.images:.2f} s).\n")
    print(f"| images | `camcli evaluate --methods {args.growth_methods}` (s) | s per image | "
          f"without start-up and loading (s) | s per image | per image vs {args.images} |\n"
          "| ---: | ---: | ---: | ---: | ---: | ---: |")
    base = None
    for (seconds, found), count in zip(growth, (args.images, args.more), strict=True):
        work_only = found["seconds"]["measures"] + found["seconds"]["randomisation"]
        base = base or work_only / count
        print(f"| {count} | {seconds:.1f} | {seconds / count:.3f} | {work_only:.1f} | "
              f"{work_only / count:.3f} | {work_only / count / base:.2f}x |")


if __name__ == "__main__":
    main()

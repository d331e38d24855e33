"""Benchmark: ``camcli batch --engine ray`` against ``--engine local`` on one machine.
Run by ``make bench``; prints a Markdown table.

The same generated photos (crops of the sample photos, 640x480 JPEGs) go through
``camcli batch`` end to end with each engine, as a user runs it: a fresh process per run,
so the Ray row pays for starting Ray and its actors, as it would in real use. Each engine
also runs four times as many photos; the difference of the two times is what the extra
photos cost without the start-up: the rate a long run settles at. The engines alternate over
``--repeats`` rounds and each keeps its best times.

    python bench/engines.py [--images 256] [--repeats 2] [--method gradcam]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from batch import REPO, machine, make_photos


def timed_run(photos: Path, out: Path, engine: str, method: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "camcli", "batch", str(photos), "--out", str(out), "-q",
               "--method", method, "--engine", engine]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--method", default="gradcam")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="camcli-engines-"))
    sizes = {"once": work / "once", "more": work / "more"}
    try:
        make_photos(sizes["once"], args.images)
        make_photos(sizes["more"], 4 * args.images)
        best = {(engine, size): float("inf") for engine in ("local", "ray") for size in sizes}
        for _ in range(args.repeats):
            for engine, size in best:
                seconds = timed_run(sizes[size], work / "out", engine, args.method)
                best[engine, size] = min(best[engine, size], seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"camcli engine benchmark — JPEGs of 640x480, {args.method}, default model, "
          f"`camcli batch` in a fresh process, best of {args.repeats}; {machine()}\n")
    extra = 3 * args.images
    print(f"| engine | {args.images} images end to end (s) | images/s | vs local | "
          f"{extra} more images (s) | images/s without start-up | vs local |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rates = {}
    for engine in ("local", "ray"):
        once, more = best[engine, "once"], best[engine, "more"]
        rates[engine] = (args.images / once, extra / max(more - once, 1e-9))
        print(f"| {engine} | {once:.1f} | {rates[engine][0]:.1f} | "
              f"{rates[engine][0] / rates['local'][0]:.2f}x | {more - once:.1f} | "
              f"{rates[engine][1]:.1f} | {rates[engine][1] / rates['local'][1]:.2f}x |")


if __name__ == "__main__":
    main()

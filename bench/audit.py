"""Benchmark: ``camcli audit``'s clustering on 10,000 and 100,000 synthetic maps — time,
peak memory and the ratios between the two sizes (near-linear is the goal: no dense n x n
matrix above a few thousand maps) — and the table behind its eigengap rule. Run by
``make bench``.

The rule table: Clever-Hans-shaped classes (a share of the maps on a corner mark, with
some of the object around it; the rest on objects of any size anywhere), 40 to 1,500 maps,
two seeds each. Purity (marked vs clean) at the number of clusters each rule picks: the
plain eigengap (largest gap, one cluster allowed; near-ties to fewer) against camcli's
(from two clusters on).

The maps are 16x16 (the default ``--grid``), three kinds (a blob at one of three places,
jittered, with noise); each size runs in its own process so its peak memory is its own.
Purity is the share of maps whose cluster's majority kind is their own.

    python bench/audit.py [--sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pasted import shortcut_maps  # noqa: E402


def synthetic(count: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 3, count)
    centres = np.array([(3, 3), (12, 12), (3, 12)], float)[kinds] + rng.normal(0, 0.8,
                                                                                (count, 2))
    y, x = np.mgrid[0:16, 0:16]
    maps = np.exp(-((x[None] - centres[:, 0, None, None]) ** 2
                    + (y[None] - centres[:, 1, None, None]) ** 2) / 8.0)
    maps += rng.uniform(0, 0.03, maps.shape)
    maps /= maps.sum(axis=(1, 2), keepdims=True)
    return maps.reshape(count, -1).astype(np.float32), kinds


def rules() -> None:
    """Purity of the plain eigengap and of camcli's on Clever-Hans-shaped classes."""
    import numpy as np

    from camcli.analysis import audit

    def plain(values):
        gaps = np.diff(values)
        return int(np.flatnonzero(gaps >= audit.GAP_TIE * gaps.max())[0]) + 1

    print("\n| maps | marked | seed | plain eigengap: clusters, purity | camcli (k >= 2): "
          "clusters, purity |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    worst = {"plain": 1.0, "camcli": 1.0}
    for count in (40, 100, 400, 1500):
        for share in (0.7, 0.85):
            for seed in (0, 1):
                maps, marked = shortcut_maps(count, share, seed)
                cells = []
                for name, rule in (("plain", plain), ("camcli", None)):
                    if rule is None:
                        labels = audit.clusters_of(maps, None, 8).labels
                    else:
                        chosen = rule(audit.spectrum(maps, 9)[0])
                        labels = audit.clusters_of(maps, chosen, 8).labels
                    purity = sum(max(marked[labels == c].sum(), (~marked[labels == c]).sum())
                                 for c in np.unique(labels)) / count
                    worst[name] = min(worst[name], purity)
                    cells.append(f"{labels.max() + 1}, {purity:.3f}")
                print(f"| {count:,} | {share:.0%} | {seed} | {cells[0]} | {cells[1]} |")
    print(f"\nWorst purity: plain {worst['plain']:.3f}, camcli {worst['camcli']:.3f}.")


def grids() -> None:
    """Purity and time of the audit's clustering by ``--grid``, on Clever-Hans-shaped
    28x28 maps (400 a class, 70% or 85% marked, two seeds each)."""
    import numpy as np

    from camcli.analysis import audit

    print("\n| --grid | mean purity | worst purity | mean clusters | seconds (8 classes) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    classes = [shortcut_maps(count, share, seed, size=28) for count in (400, 100)
               for share in (0.7, 0.85) for seed in (0, 1)]
    for grid in (4, 8, 16, 28):
        purities, counts = [], []
        started = time.perf_counter()
        for maps, marked in classes:
            flat = np.stack([audit.prepared(m.reshape(28, 28), grid).ravel() for m in maps])
            labels = audit.clusters_of(flat, None, 8).labels
            purities.append(sum(max(marked[labels == c].sum(), (~marked[labels == c]).sum())
                                for c in np.unique(labels)) / len(flat))
            counts.append(labels.max() + 1)
        seconds = time.perf_counter() - started
        print(f"| {grid} | {np.mean(purities):.3f} | {min(purities):.3f} | "
              f"{np.mean(counts):.1f} | {seconds:.1f} |")


def one(count: int) -> dict:
    """Cluster ``count`` maps in this process: seconds, peak RSS (MiB), purity, clusters."""
    import resource

    import numpy as np

    from camcli.analysis.audit import clusters_of, layout

    flat, kinds = synthetic(count)
    started = time.perf_counter()
    found = clusters_of(flat, None, 8)
    layout(found.vectors)  # the report's picture, as camcli audit draws it
    seconds = time.perf_counter() - started
    labels = found.labels
    majority = sum(np.bincount(kinds[labels == c]).max() for c in np.unique(labels))
    return {"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, "purity": majority / count, "clusters": int(labels.max() + 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--skip-rules", action="store_true")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    from batch import machine

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"camcli audit benchmark — synthetic 16x16 maps of three kinds; {machine()}\n")
    print("| maps | clusters found | purity | seconds | peak memory (MiB) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    results = {}
    for size in sizes:
        done = subprocess.run([sys.executable, __file__, "--one", str(size)], check=True,
                              capture_output=True, text=True)
        results[size] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[size]
        print(f"| {size:,} | {r['clusters']} | {r['purity']:.3f} | {r['seconds']:.1f} | "
              f"{r['peak_mib']:.0f} |")
    if len(sizes) == 2:
        small, large = (results[s] for s in sizes)
        print(f"\n{sizes[1] // sizes[0]}x the maps: {large['seconds'] / small['seconds']:.1f}x "
              f"the time, {large['peak_mib'] / small['peak_mib']:.2f}x the peak memory.")
    if not args.skip_rules:
        rules()
        grids()


if __name__ == "__main__":
    main()

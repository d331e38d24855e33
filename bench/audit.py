"""Benchmark: ``camcli audit``'s clustering on 10,000 and 100,000 synthetic maps — time,
peak memory and the ratios between the two sizes (near-linear is the goal: no dense n x n
matrix above a few thousand maps). Run by ``make bench``.

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


def one(count: int) -> dict:
    """Cluster ``count`` maps in this process: seconds, peak RSS (MiB), purity, clusters."""
    import resource

    import numpy as np

    from camcli.audit import clusters_of

    flat, kinds = synthetic(count)
    started = time.perf_counter()
    labels, _, _ = clusters_of(flat, None, 8)
    seconds = time.perf_counter() - started
    majority = sum(np.bincount(kinds[labels == c]).max() for c in np.unique(labels))
    return {"seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, "purity": majority / count, "clusters": int(labels.max() + 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
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


if __name__ == "__main__":
    main()

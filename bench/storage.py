"""Benchmark: ``camcli batch`` with its inputs and outputs on local disk vs in an S3 bucket
(moto's S3 server over HTTP on 127.0.0.1), and how the bucket's rate grows with
``--workers`` (requests in flight). Run by ``make bench`` (needs camcli[s3] and
moto[server], which ``make test``'s dev extras install).

Every run explains the same JPEGs with the default model and Grad-CAM, through the same
session (model loaded once), writing overlays and a manifest; rates are end to end.

    python bench/storage.py [--images 1000] [--workers 1,2,4,8]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batch import machine, make_photos  # noqa: E402


def moto_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("moto's S3 server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    server, endpoint = moto_server()
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        import boto3
        import fsspec

        from camcli.options import BatchOptions, ExplainRequest, ModelRequest
        from camcli.run.batch import run_batch
        from camcli.run.session import open_session

        boto3.client("s3").create_bucket(Bucket="bench")
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            photos = work / "photos"
            make_photos(photos, args.images, size=(320, 240))
            fs = fsspec.filesystem("s3")
            fs.put(str(photos) + "/", "bench/photos/", recursive=True)
            session = open_session(ModelRequest(device="cpu"), ExplainRequest())
            warm = session.explainer.input_size
            import numpy as np

            session.explainer(np.zeros((1, *warm, 3), np.float32),
                              session.plan.targets([None]))

            def rate(inputs: str, out: str, workers: int) -> float:
                started = time.perf_counter()
                summary = run_batch([inputs], session, BatchOptions(
                    out_dir=out, batch_size=args.batch_size, workers=workers))
                assert summary.written == args.images, summary
                return summary.total / (time.perf_counter() - started)

            print(f"camcli storage benchmark — {args.images} JPEGs of 320x240, default model, "
                  f"Grad-CAM, batch {args.batch_size}; moto's S3 server on 127.0.0.1; "
                  f"{machine()}\n")
            print("| inputs -> outputs | --workers | images/s | vs local disk |")
            print("| --- | ---: | ---: | ---: |")
            local = rate(str(photos), str(work / "out-local"), 2)
            print(f"| local disk -> local disk | 2 | {local:.1f} | 1.00x |")
            for workers in (int(w) for w in args.workers.split(",")):
                remote = rate("s3://bench/photos", f"s3://bench/out-{workers}", workers)
                print(f"| s3:// -> s3:// | {workers} | {remote:.1f} | {remote / local:.2f}x |")
            again = rate(str(photos), str(work / "out-local-2"), 2)
            print(f"| local disk -> local disk (again, for the drift) | 2 | {again:.1f} | "
                  f"{again / local:.2f}x |")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()

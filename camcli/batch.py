"""``camcli batch``: explain a tree of images into a mirrored tree of overlays.

Each input becomes ``OUT/<relative path, extension .jpg>`` (plus ``.npy`` with
``save_maps``) and one JSON line in ``OUT/manifest.jsonl``. A manifest line is appended
only after its files are completely written (each through a temporary file and a rename),
so a record always means a complete output. Re-running the same command skips the inputs
the manifest records as done with the same model, layer, method and class and whose files
are on disk.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from camcli import render
from camcli.atomic import remove_stale_temporaries, write_atomic
from camcli.errors import OutputError
from camcli.inputs import InputItem, check_inputs, discover
from camcli.methods import TOP1
from camcli.metrics import RunningMeans
from camcli.pipeline import Explainer, ImageResult, explain_stream

log = logging.getLogger("camcli")

MANIFEST_NAME = "manifest.jsonl"


@dataclass
class BatchOptions:
    """How a batch run renders and writes (see ``camcli batch --help``)."""

    out_dir: str
    patterns: Sequence[str] | None = None
    save_maps: bool = False
    overwrite: bool = False
    alpha: float = 0.4
    colormap: str = "jet"
    quality: int = 90
    batch_size: int = 32
    top_k: int = 5
    workers: int = 2
    shard: tuple[int, int] | None = None  # (K, N), 1 <= K <= N


@dataclass
class BatchSummary:
    """What a run did. ``failed`` counts inputs that got an error record in this run."""

    total: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    manifest: str = ""
    failures: list[tuple[str, str]] = field(default_factory=list)
    metrics: dict | None = None  # run means, see camcli.metrics.RunningMeans

    @property
    def images_per_second(self) -> float:
        processed = self.written + self.failed
        return processed / self.seconds if self.seconds > 0 else 0.0


class Reporter:
    """Progress hooks; the CLI passes one that drives a tqdm bar. The default is silent."""

    def start(self, total: int) -> None:
        """Called once, with the number of inputs found."""

    def advance(self, result: ImageResult | None) -> None:
        """Called per input: the result, or None for an input skipped as already done."""

    def close(self) -> None:
        """Called once at the end."""


class Manifest:
    """``manifest.jsonl``: one JSON object per line, appended with one write per line."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        size = os.fstat(self._fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":  # a line torn by a killed run: end it
                    os.write(self._fd, b"\n")

    def append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            os.write(self._fd, line)
        except OSError as exc:
            raise OutputError(f"cannot write the manifest {self.path}: "
                              f"{exc.strerror or exc}; run the same command again to resume "
                              "once it can be written") from None

    def close(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)

    @staticmethod
    def records(path: str) -> Iterator[dict]:
        """Yield the complete records of a manifest; torn or foreign lines are skipped."""
        try:
            f = open(path, encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        with f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and "input" in record:
                    yield record


def _run_key(explainer: Explainer) -> tuple:
    return (explainer.loaded.name, explainer.layer, explainer.method_name)


def _done_records(path: str, explainer: Explainer) -> dict[str, dict]:
    """Inputs already explained by the same model, layer, method and class request:
    ``{input: {rank: (output, map)}}``, rank None outside --top-k-maps runs."""
    done: dict[str, dict] = {}
    key = _run_key(explainer)
    for record in Manifest.records(path):
        rank = record.get("rank")
        same_run = (record.get("model"), record.get("layer"), record.get("method")) == key
        same_run = same_run and (rank is None) == (explainer.top_k_maps is None)
        if record.get("error") is None and same_run and _same_class(record, explainer):
            if rank is None or rank == 1:
                done[record["input"]] = {}  # a new run of this input starts here
            done.setdefault(record["input"], {})[rank] = (record.get("output"),
                                                          record.get("map"))
        else:
            done.pop(record["input"], None)  # a later failure or other run supersedes
    return done


def _same_class(record: dict, explainer: Explainer) -> bool:
    if explainer.class_index == TOP1:
        top, position = record.get("top") or [], (record.get("rank") or 1) - 1
        return position < len(top) and record.get("class_index") == top[position][0]
    return record.get("class_index") == explainer.class_index


def safe_label(label: str) -> str:
    """A class label fit for a file name: ``potter's wheel`` -> ``potter_s_wheel``."""
    return re.sub(r"[^0-9A-Za-z._-]+", "_", label).strip("._") or "class"


def renders(result: ImageResult, output: str, map_path: str | None, labels) -> list[tuple]:
    """The pictures to write for one result: ``(rank, class_index, heatmap, output, map)``.

    One, named ``output``; or with --top-k-maps one per rank, named
    ``<stem>.<rank>-<label>.jpg`` (and ``.npy``), rank 1 first.
    """
    if result.ranked is None:
        return [(None, result.class_index, result.heatmap, output, map_path)]
    stem = os.path.splitext(output)[0]
    rows = []
    for rank, (class_index, heatmap) in enumerate(result.ranked, 1):
        name = f"{stem}.{rank}-{safe_label(labels.name(class_index))}"
        rows.append((rank, class_index, heatmap, name + ".jpg",
                     name + ".npy" if map_path else None))
    return rows


def in_shard(relative: str, shard: tuple[int, int] | None) -> bool:
    """Whether an input belongs to shard (K, N): a stable hash of its path without the
    extension, so inputs that share an output name (``x.png``, ``x.jpg``) share a shard."""
    if shard is None:
        return True
    index, count = shard
    stem = os.path.splitext(relative)[0].encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.sha1(stem).digest()[:8], "big") % count == index - 1


def manifest_name(shard: tuple[int, int] | None) -> str:
    """``manifest.jsonl``, or ``manifest.K-of-N.jsonl`` for one shard of a split run."""
    return MANIFEST_NAME if shard is None else f"manifest.{shard[0]}-of-{shard[1]}.jsonl"


#: Write errors that are about the output location, not the input: they stop the run.
_FATAL_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _check_writable(out_dir: str) -> None:
    try:
        os.makedirs(out_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=".camcli-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {out_dir}: {exc.strerror or exc}") \
            from None


class _OutputNames:
    """Maps relative input paths to output names: the extension becomes ``.jpg``; when two
    inputs would share a name (``a.png`` and ``a.jpg``) the later keeps its full name
    (``a.png.jpg``). Inputs come in a deterministic order, so reruns name things alike."""

    def __init__(self):
        self._claimed: dict[str, str] = {}

    def __call__(self, relative: str) -> str:
        stem, _ = os.path.splitext(relative)
        name = stem + ".jpg"
        owner = self._claimed.setdefault(name, relative)
        if owner != relative:
            name = relative + ".jpg"
            self._claimed.setdefault(name, relative)
        return name


def _safe_join(out_dir: str, relative: str) -> str:
    normal = os.path.normpath(relative)
    if os.path.isabs(normal) or normal == ".." or normal.startswith(".." + os.sep):
        raise OutputError(f"output path {relative!r} would leave the output folder")
    return os.path.join(out_dir, normal)


def run_batch(inputs: Sequence[str], explainer: Explainer, options: BatchOptions,
              reporter: Reporter | None = None,
              stop_requested: Callable[[], bool] | None = None) -> BatchSummary:
    """Explain every image under ``inputs`` into ``options.out_dir``.

    Returns a summary; per-input failures are manifest records, not exceptions.
    ``stop_requested`` is polled after each result: when it answers True, no new image is
    started, the outputs in flight are finished and recorded, and the summary says
    ``interrupted`` (the CLI's Ctrl-C handler sets it). A KeyboardInterrupt is handled
    the same way, as well as it can be.

    With ``options.shard = (K, N)`` only the K-th of N disjoint parts of the inputs is
    processed and recorded in ``manifest.K-of-N.jsonl``, so N processes can share one
    input tree and one output folder.

    Raises:
        InputNotFound: an input names nothing (before any work).
        OutputError: the output folder cannot be written (before any work), or the disk
            filled up / became read-only during the run (after recording what was done).
    """
    reporter = reporter or Reporter()
    check_inputs(inputs)
    _check_writable(options.out_dir)
    started = time.perf_counter()
    leftovers = remove_stale_temporaries(options.out_dir)
    if leftovers:
        log.info("removed %d temporary files left by an interrupted run", leftovers)
    manifest_path = os.path.join(options.out_dir, manifest_name(options.shard))
    summary = BatchSummary(manifest=manifest_path)
    done = {}
    if not options.overwrite:
        done = _done_records(manifest_path, explainer)
        if options.shard is not None:  # an unsharded run before this one counts too
            main = _done_records(os.path.join(options.out_dir, MANIFEST_NAME), explainer)
            done = {**main, **done}
    fatal: list[OSError] = []
    means = RunningMeans()

    def found() -> Iterator[InputItem]:
        for item in discover(inputs, options.patterns, exclude=options.out_dir):
            if in_shard(item.relative, options.shard):
                yield item

    summary.total = sum(1 for _ in found())
    reporter.start(summary.total)
    names = _OutputNames()
    targets: dict[str, tuple[str, str | None]] = {}

    def to_process() -> Iterator[InputItem]:
        for item in found():
            output = _safe_join(options.out_dir, names(item.relative))
            map_path = os.path.splitext(output)[0] + ".npy" if options.save_maps else None
            previous = done.pop(item.path, None)
            if previous is not None and _complete(previous, output, map_path,
                                                  explainer.top_k_maps):
                summary.skipped += 1
                reporter.advance(None)
                continue
            targets[item.path] = (output, map_path)
            yield item

    manifest = Manifest(manifest_path)
    pending: deque = deque()
    writers = ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="write")

    def finish_oldest() -> None:
        # Popped only once recorded: an interrupt in here leaves the entry for the finally.
        result, pictures, future = pending[0]
        error = result.error
        if error is None:
            try:
                future.result()
            except OSError as exc:
                if exc.errno in _FATAL_WRITE_ERRORS:
                    # Not this input's fault: leave it unrecorded (it is redone on resume)
                    # and stop the run.
                    fatal.append(exc)
                    pending.popleft()
                    targets.pop(result.item.path, None)
                    return
                error = f"cannot write output: {exc.strerror or exc}"
            except Exception as exc:  # e.g. cv2.error: this input fails, the run goes on
                error = f"cannot render output ({type(exc).__name__}: {exc})"
        if error is None:
            summary.written += 1
            means.add(result.metrics)
            for rank, class_index, _, output, map_path in pictures:
                manifest.append(_record(result, explainer, options, output, map_path,
                                        class_index=class_index, rank=rank))
        else:
            summary.failed += 1
            if len(summary.failures) < 1000:
                summary.failures.append((result.item.path, error))
            manifest.append(_record(result, explainer, options, None, None, error))
        pending.popleft()
        targets.pop(result.item.path, None)
        reporter.advance(result)

    stream = explain_stream(to_process(), explainer, options.batch_size, options.workers)
    try:
        for result in stream:
            future, pictures = None, []
            if result.error is None:
                output, map_path = targets[result.item.path]
                pictures = renders(result, output, map_path, explainer.loaded.labels)
                future = writers.submit(_write, result, pictures, options)
            pending.append((result, pictures, future))
            while pending and (len(pending) > 2 * options.batch_size
                               or pending[0][2] is None or pending[0][2].done()):
                finish_oldest()
            if stop_requested is not None and stop_requested():
                summary.interrupted = True
                break
            if fatal:
                break
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        stream.close()  # stop decoding ahead
        while pending:
            finish_oldest()
        writers.shutdown(wait=True)
        manifest.close()
        reporter.close()
    summary.seconds = time.perf_counter() - started
    summary.metrics = means.result()
    if fatal:
        reason = fatal[0].strerror or str(fatal[0])
        raise OutputError(
            f"cannot write to {options.out_dir}: {reason}. {summary.written} inputs were "
            "written and recorded before it; run the same command again to resume")
    return summary


def _complete(previous: dict, output: str, map_path: str | None,
              top_k_maps: int | None) -> bool:
    """Whether the recorded outputs of an input are what this run would write, on disk."""
    if top_k_maps is None:
        if previous.get(None) != (output, map_path):
            return False
        files = [(output, map_path)]
    else:
        # Ranked names contain the predicted labels, known only after the model ran:
        # check that every rank is recorded and its files exist.
        if any(rank not in previous for rank in range(1, top_k_maps + 1)):
            return False
        files = [previous[rank] for rank in range(1, top_k_maps + 1)]
        if any((recorded_map is None) != (map_path is None) for _, recorded_map in files):
            return False
    return all(os.path.isfile(out) and (npy is None or os.path.isfile(npy))
               for out, npy in files)


def _write(result: ImageResult, pictures: list[tuple], options: BatchOptions) -> None:
    for _rank, _class_index, heatmap, output, map_path in pictures:
        picture = render.overlay(result.image, heatmap, options.alpha, options.colormap)
        write_atomic(output, render.encode_jpeg(picture, options.quality))
        if map_path is not None:
            write_atomic(map_path, render.encode_npy(heatmap.astype("float32")))
    result.image = None  # the photo is no longer needed; free it before the record is made


def _record(result: ImageResult, explainer: Explainer, options: BatchOptions,
            output: str | None, map_path: str | None, error: str | None = None,
            class_index: int | None = None, rank: int | None = None) -> dict:
    labels = explainer.loaded.labels
    ok = error is None
    class_index = result.class_index if class_index is None else class_index
    record = {
        "input": result.item.path,
        "output": output,
        "map": map_path,
        "model": explainer.loaded.name,
        "layer": explainer.layer,
        "method": explainer.method_name,
        "class_index": class_index if ok else None,
        "label": labels.name(class_index) if ok else None,
        "score": float(result.probabilities[class_index]) if ok else None,
        "top": result.top(max(options.top_k, explainer.top_k_maps or 0), labels) if ok else [],
        "metrics": result.metrics if ok and rank in (None, 1) else None,
        "error": error,
    }
    if explainer.top_k_maps is not None:
        record["rank"] = rank
    return record

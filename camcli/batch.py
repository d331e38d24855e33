"""``camcli batch``: explain a tree of images into a mirrored tree of overlays.

Each input becomes ``OUT/<relative path, extension .jpg>`` (plus ``.npy`` with
``save_maps``) and one JSON line in ``OUT/manifest.jsonl``. A manifest line is appended
only after its files are completely written (each through a temporary file and a rename),
so a record always means a complete output. Re-running the same command skips the inputs
the manifest records as done with the same model, layer, method and class and whose files
are on disk.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from camcli import render
from camcli.atomic import write_atomic
from camcli.errors import OutputError
from camcli.inputs import InputItem, check_inputs, discover
from camcli.methods import TOP1
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
        os.write(self._fd, (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))

    def sync(self) -> None:
        os.fsync(self._fd)

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


def _done_records(path: str, explainer: Explainer) -> dict[str, tuple]:
    """Inputs already explained by the same model, layer, method and class request."""
    done: dict[str, tuple] = {}
    key = _run_key(explainer)
    for record in Manifest.records(path):
        same_run = (record.get("model"), record.get("layer"), record.get("method")) == key
        if record.get("error") is None and same_run and _same_class(record, explainer):
            done[record["input"]] = (record.get("output"), record.get("map"))
        else:
            done.pop(record["input"], None)  # a later failure or other run supersedes
    return done


def _same_class(record: dict, explainer: Explainer) -> bool:
    if explainer.class_index == TOP1:
        top = record.get("top") or [[None]]
        return record.get("class_index") == top[0][0]
    return record.get("class_index") == explainer.class_index


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
              reporter: Reporter | None = None) -> BatchSummary:
    """Explain every image under ``inputs`` into ``options.out_dir``.

    Returns a summary; per-input failures are manifest records, not exceptions.

    Raises:
        InputNotFound: an input names nothing (before any work).
        OutputError: the output folder cannot be written (before any work).
    """
    reporter = reporter or Reporter()
    check_inputs(inputs)
    _check_writable(options.out_dir)
    started = time.perf_counter()
    manifest_path = os.path.join(options.out_dir, MANIFEST_NAME)
    summary = BatchSummary(manifest=manifest_path)
    done = {} if options.overwrite else _done_records(manifest_path, explainer)

    def found() -> Iterator[InputItem]:
        return discover(inputs, options.patterns, exclude=options.out_dir)

    summary.total = sum(1 for _ in found())
    reporter.start(summary.total)
    names = _OutputNames()
    targets: dict[str, tuple[str, str | None]] = {}

    def to_process() -> Iterator[InputItem]:
        for item in found():
            output = _safe_join(options.out_dir, names(item.relative))
            map_path = os.path.splitext(output)[0] + ".npy" if options.save_maps else None
            previous = done.pop(item.path, None)
            if previous is not None and _complete(previous, output, map_path):
                summary.skipped += 1
                reporter.advance(None)
                continue
            targets[item.path] = (output, map_path)
            yield item

    manifest = Manifest(manifest_path)
    pending: deque = deque()
    writers = ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="write")

    def finish_oldest() -> None:
        result, future = pending.popleft()
        output, map_path = targets.pop(result.item.path)
        error = result.error
        if error is None:
            try:
                future.result()
            except OSError as exc:
                error = f"cannot write output: {exc.strerror or exc}"
            except Exception as exc:  # e.g. cv2.error: this input fails, the run goes on
                error = f"cannot render output ({type(exc).__name__}: {exc})"
        if error is None:
            summary.written += 1
            record = _record(result, explainer, options, output, map_path)
        else:
            summary.failed += 1
            if len(summary.failures) < 1000:
                summary.failures.append((result.item.path, error))
            record = _record(result, explainer, options, None, None, error)
        manifest.append(record)
        reporter.advance(result)

    try:
        stream = explain_stream(to_process(), explainer, options.batch_size, options.workers)
        for result in stream:
            future = None
            if result.error is None:
                output, map_path = targets[result.item.path]
                future = writers.submit(_write, result, output, map_path, options)
            pending.append((result, future))
            while pending and (len(pending) > 2 * options.batch_size
                               or pending[0][1] is None or pending[0][1].done()):
                finish_oldest()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        while pending:
            finish_oldest()
        writers.shutdown(wait=True)
        manifest.close()
        reporter.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _complete(previous: tuple, output: str, map_path: str | None) -> bool:
    recorded_output, recorded_map = previous
    if recorded_output != output or not os.path.isfile(output):
        return False
    if map_path is not None:
        return recorded_map == map_path and os.path.isfile(map_path)
    return True


def _write(result: ImageResult, output: str, map_path: str | None,
           options: BatchOptions) -> None:
    picture = render.overlay(result.image, result.heatmap, options.alpha, options.colormap)
    write_atomic(output, render.encode_jpeg(picture, options.quality))
    if map_path is not None:
        write_atomic(map_path, render.encode_npy(result.heatmap.astype("float32")))
    result.image = None  # the photo is no longer needed; free it before the record is made


def _record(result: ImageResult, explainer: Explainer, options: BatchOptions,
            output: str | None, map_path: str | None, error: str | None = None) -> dict:
    labels = explainer.loaded.labels
    ok = error is None
    return {
        "input": result.item.path,
        "output": output,
        "map": map_path,
        "model": explainer.loaded.name,
        "layer": explainer.layer,
        "method": explainer.method_name,
        "class_index": result.class_index if ok else None,
        "label": labels.name(result.class_index) if ok else None,
        "score": result.score if ok else None,
        "top": result.top(options.top_k, labels) if ok else [],
        "error": error,
    }

"""``camcli batch``: explain a tree of images into a mirrored tree of pictures, with a manifest.

A run is plan -> execute -> record:

* `plan` decides, input by input, what to do: a `Job` with its output names, marked
  ``done`` when the manifest already answers the same request with its files on disk. It
  reads nothing but what it is given.
* `Executor` does the jobs: it hands each job's input to the pipeline (decoding ahead of
  the model in threads, one forward pass per batch), joins the results back to the jobs,
  draws and writes the pictures behind it in threads (`camcli.run.outputs`), and makes each
  job's records, with the `Request` they answer (`request_of`). The same code serves any
  engine that schedules it.
* `Recorder` appends each job's records to the manifest in one write, only after its
  files are renamed into place, counts, and drives the progress hooks.

`run_batch` wires the three. An engine runs the jobs: `LocalEngine` in this process, or
`camcli.run.ray_engine.RayEngine` on a Ray cluster, which runs the same `Executor` in its
actors and hands their records back to the same `Recorder`. Re-running the same command
appends nothing for what is done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from camcli.analysis.metrics import RunningMeans
from camcli.compute.methods import METHODS
from camcli.errors import OutputError
from camcli.io import locations
from camcli.io.checkpoints import reached
from camcli.io.inputs import InputItem, check_inputs, discover
from camcli.io.storage import Storage, resolved
from camcli.options import BatchOptions, ExplainRequest, ModelRequest, RayOptions, default
from camcli.records.manifest import (
    Group,
    ManifestWriter,
    Record,
    Request,
    latest,
    manifest_name,
    relative_to,
)
from camcli.run import outputs
from camcli.run.classes import with_classes
from camcli.run.pipeline import ImageResult
from camcli.run.session import Session, open_session

log = logging.getLogger("camcli")


@dataclass
class Job:
    """One input on its way through a run.

    Attributes:
        item: the input (with the class asked of it, or why it cannot be done).
        output: its picture's path (ranked pictures are named beside it).
        map_path: its ``.npy`` path, or None.
        done: the manifest already answers it (nothing to do).
        records: its manifest records, once finished.
        error: why it failed (decoding, drawing or writing).
        fatal: a write error about the output location (disk full): left unrecorded.
        recorded: its records are in the manifest.
    """

    item: InputItem
    output: str
    map_path: str | None = None
    done: bool = False
    records: list[Record] = field(default_factory=list)
    error: str | None = None
    fatal: OSError | None = None
    recorded: bool = False

    @property
    def key(self) -> str:
        """The input as records name it: its absolute path."""
        return locations.absolute(self.item.path)

    def to_row(self) -> dict:
        """The job as a row of plain values (for an engine that ships jobs elsewhere, as
        Ray Data does): paths absolute, None kept as None, the outcome included."""
        fatal = self.fatal
        return {"path": self.key, "relative": self.item.relative,
                "requested_class": self.item.requested_class, "problem": self.item.problem,
                "output": locations.absolute(self.output),
                "map_path": locations.absolute(self.map_path) if self.map_path else None,
                "records": [record.to_json() for record in self.records],
                "error": self.error,
                "fatal_errno": None if fatal is None else fatal.errno,
                "fatal_reason": None if fatal is None else (fatal.strerror or str(fatal))}

    @classmethod
    def from_row(cls, row: dict, out_dir: str) -> Job:
        """The job a `to_row` row describes (records read as the manifest in ``out_dir``
        reads them)."""
        item = InputItem(row["path"], row["relative"], row["requested_class"], row["problem"])
        job = cls(item, row["output"], row["map_path"], error=row["error"])
        job.records = [record for record in (Record.from_json(line, out_dir)
                                             for line in row["records"]) if record is not None]
        if row["fatal_reason"] is not None:
            job.fatal = OSError(row["fatal_errno"] or errno.EIO, row["fatal_reason"])
        return job


@dataclass
class BatchSummary:
    """What a run did. ``failed`` counts inputs that got an error record in this run;
    ``lost`` those an engine could not finish (a worker that kept dying): they are left
    unrecorded, for the next run."""

    total: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    lost: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    manifest: str = ""
    metrics: dict | None = None  # run means, see camcli.analysis.metrics.RunningMeans
    report: str | None = None  # the report written after the run (BatchOptions.report)

    @property
    def images_per_second(self) -> float:
        processed = self.written + self.failed
        return processed / self.seconds if self.seconds > 0 else 0.0


class Reporter:
    """Progress hooks; the CLI passes one that drives a tqdm bar. The default is silent."""

    def start(self, total: int) -> None:
        """Called once, with the number of inputs found."""

    def advance(self, path: str | None = None, error: str | None = None) -> None:
        """Called per input: the input finished (with its error, if it failed), or no
        path for an input already done."""

    def close(self) -> None:
        """Called once at the end."""


# -- plan ----------------------------------------------------------------------------------


def in_shard(relative: str, shard: tuple[int, int] | None) -> bool:
    """Whether an input belongs to shard (K, N): a stable hash of its path without the
    extension, so inputs that share an output name (``x.png``, ``x.jpg``) share a shard."""
    if shard is None:
        return True
    index, count = shard
    stem = os.path.splitext(relative)[0].encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.sha1(stem).digest()[:8], "big") % count == index - 1


def selected(inputs: Sequence[str], options: BatchOptions, storage: Storage | None = None
             ) -> Iterator[InputItem]:
    """The inputs of this run (this shard's), each file once, lazily and in order."""
    seen: set[str] = set()
    for item in discover(inputs, options.patterns, exclude=options.out_dir,
                         storage=storage):
        key = locations.absolute(item.path)
        if in_shard(item.relative, options.shard) and key not in seen:
            seen.add(key)
            yield item


def plan(items: Iterable[InputItem], options: BatchOptions,
         request: Callable[[InputItem], Request], top_k_maps: int | None,
         done: dict[str, Group], exists: Callable[[str], bool] | None = None,
         storage: Storage | None = None) -> Iterator[Job]:
    """A job per input, marked ``done`` when ``done`` (the manifest's latest groups, keeping
    each record's ``(output, map)``) answers ``request(item)`` with every file present
    (``exists``: default, the output folder's store says)."""
    exists = exists or resolved(storage).store(options.out_dir).isfile
    names = outputs.MirroredNames(options.out_dir)
    for item in items:
        output = names(item.relative)
        map_path = os.path.splitext(output)[0] + ".npy" if options.save_maps else None
        job = Job(item, output, map_path)
        group = done.get(job.key)
        job.done = group is not None and _answers(group, job, request(item), top_k_maps,
                                                  options.out_dir, exists)
        yield job


def _answers(group: Group, job: Job, request: Request, top_k_maps: int | None, out_dir: str,
             exists: Callable[[str], bool]) -> bool:
    if group.failed or not group.answers(request):
        return False
    output = relative_to(job.output, out_dir)
    wanted_map = relative_to(job.map_path, out_dir) if job.map_path else None
    if top_k_maps is None:
        files = [group.by_rank.get(None)]
        if files[0] != (output, wanted_map):
            return False
    else:
        # Ranked names hold the predicted labels, known only after the model ran.
        stem = os.path.splitext(output)[0]
        slots = {rank: f"{stem}.{rank}-" for rank in range(1, top_k_maps + 1)}
        if request.requested_class is not None:
            slots[None] = f"{stem}.{outputs.ASKED}-"
        if any(slot not in group.by_rank for slot in slots):
            return False
        files = [group.by_rank[slot] for slot in slots]
        for prefix, (recorded, recorded_map) in zip(slots.values(), files, strict=True):
            if not recorded.startswith(prefix) or (recorded_map is None) != (wanted_map is None):
                return False
    return all(exists(locations.join(out_dir, picture))
               and (npy is None or exists(locations.join(out_dir, npy))) for picture, npy in files)


def _files(record: Record) -> tuple[str | None, str | None]:
    return record.output, record.map


# -- execute -------------------------------------------------------------------------------


class Executor:
    """Decode -> explain -> draw and write, for a stream of jobs.

    `run` yields the jobs finished, in input order: each with its records made, or its
    ``error`` (an error record) or ``fatal`` (no record) set. Jobs still being written when
    the consumer stops come out of `drain`. The pipeline sees only each job's input; its
    results are joined back to the jobs here, by their order.
    """

    def __init__(self, session: Session, options: BatchOptions):
        self.session = session
        self.options = options
        self._writers = ThreadPoolExecutor(max_workers=max(1, options.workers),
                                           thread_name_prefix="write")
        self._pending: deque[tuple[Job, Future | None]] = deque()

    def run(self, jobs: Iterable[Job], stop_requested: Callable[[], bool] = lambda: False
            ) -> Iterator[Job]:
        """Do ``jobs``; after each image, stop taking new ones once ``stop_requested()``."""
        capacity = 2 * self.options.batch_size
        fed: deque[Job] = deque()  # given to the pipeline, whose result has not come back

        def inputs() -> Iterator[InputItem]:
            for job in jobs:
                fed.append(job)
                yield job.item

        stream = self.session.stream(inputs(), self.options.batch_size, self.options.workers)
        try:
            for result in stream:
                job = fed.popleft()  # the pipeline keeps the inputs' order
                if result.input is not job.item:
                    raise RuntimeError(f"the pipeline's result for {result.input.path} came "
                                       f"back in the place of {job.item.path}")
                self._pending.append((job, self._submit(job, result)))
                yield from self._hand_out(wait=len(self._pending) > capacity)
                if stop_requested():
                    break
        finally:
            stream.close()  # stop decoding ahead

    def drain(self) -> Iterator[Job]:
        """The jobs still in flight, once written, in order."""
        yield from self._hand_out(wait=True)

    def close(self) -> None:
        self._writers.shutdown(wait=True)

    def _hand_out(self, wait: bool) -> Iterator[Job]:
        # A job leaves the queue only after the consumer has taken it: if an interrupt
        # lands while the consumer records it, `drain` hands it out again.
        while self._pending:
            job, future = self._pending[0]
            if future is not None:
                if not (wait or future.done()):
                    return
                future.result()
            yield job
            self._pending.popleft()

    def _submit(self, job: Job, result: ImageResult) -> Future | None:
        if result.error is not None:
            job.error = result.error
            job.records = self._records(job, result, [])
            return None
        pictures = outputs.pictures(result, job.output, job.map_path is not None,
                                    self.session.labels)
        return self._writers.submit(self._write, job, result, pictures)

    def _write(self, job: Job, result: ImageResult, pictures: list[outputs.Picture]) -> None:
        session = self.session
        outcome = outputs.write_all(result, pictures, self.options.style,
                                    session.explainer.method_name, session.labels,
                                    session.box_threshold, session.storage)
        job.error, job.fatal = outcome.error, outcome.fatal
        job.records = self._records(job, result, outcome.written)

    def _records(self, job: Job, result: ImageResult, written: list[outputs.Drawn]
                 ) -> list[Record]:
        session, out_dir = self.session, self.options.out_dir
        labels = session.labels
        common = {"input": job.key, "request": request_of(session, job.item),
                  "precision": session.loaded.precision,
                  "class_specific": session.explainer.method.class_specific}
        if job.error is not None:
            return [Record(**common, error=job.error)]
        top = result.top(max(self.options.top_k, session.plan.top_k or 0), labels)
        return [Record(**common, rank=drawn.picture.rank,
                       output=relative_to(drawn.picture.path, out_dir),
                       map=(relative_to(drawn.picture.map_path, out_dir)
                            if drawn.picture.map_path else None),
                       class_index=drawn.picture.class_index,
                       label=labels.name(drawn.picture.class_index),
                       score=float(result.probabilities[drawn.picture.class_index]), top=top,
                       peak=drawn.peak, box=drawn.box,
                       metrics=result.metrics if number == 0 else None)
                for number, drawn in enumerate(written)]


def request_of(session: Session, item: InputItem) -> Request:
    """The request the records of ``item`` answer (its own class, with a class per
    image)."""
    target, asked, source = session.plan.kind(item.requested_class)
    explainer = session.explainer
    return Request(session.loaded.name, explainer.layer, explainer.method_name, target, asked,
                   source, explainer.fuse, explainer.tokens, settings_of(session.request))


#: Method options that change how fast a map is made, not the map.
_SPEED_ONLY = ("scorecam_batch",)


def settings_of(request: ExplainRequest) -> str | None:
    """A `Request`'s ``settings``: the smoothing and the method's own options that change
    its maps, where they differ from their defaults."""
    if request.method is None:
        return None
    names = ("smooth", *(n for n in METHODS[request.method].options if n not in _SPEED_ONLY))
    said = [f"{name}={getattr(request, name)}" for name in names
            if getattr(request, name) != default(ExplainRequest, name)]
    return ",".join(said) or None


# -- record --------------------------------------------------------------------------------


class Recorder:
    """Records finished jobs in the manifest, and counts the run's outcomes."""

    def __init__(self, writer: ManifestWriter, reporter: Reporter, total: int):
        self.writer = writer
        self.reporter = reporter
        self.summary = BatchSummary(total=total, manifest=writer.path)
        self.means = RunningMeans()
        self.fatal: OSError | None = None

    def skip_done(self, jobs: Iterable[Job]) -> Iterator[Job]:
        """The jobs not done yet; the others are counted as already done."""
        for job in jobs:
            if job.done:
                self.summary.skipped += 1
                self.reporter.advance()
            else:
                yield job

    def record(self, job: Job) -> None:
        """Append a finished job's records (once, however often it is handed in)."""
        if job.recorded:
            return
        job.recorded = True  # before the write: an interrupt after it must not append twice
        if job.fatal is not None:
            self.fatal = self.fatal or job.fatal
            return
        self.writer.append(job.records)
        reached("recorded")
        if job.error is None:
            self.summary.written += 1
            self.means.add(job.records[0].metrics)
        else:
            self.summary.failed += 1
        self.reporter.advance(job.item.path, job.error)

    def count_lost(self, jobs: Iterable[Job]) -> None:
        """Count jobs an engine gave up on: they stay unrecorded, for the next run."""
        paths = [job.item.path for job in jobs]
        self.summary.lost += len(paths)
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        log.warning("%d inputs were not done (their worker kept failing): %s; run the same "
                    "command again to do them", len(paths), shown)


class LocalEngine:
    """Runs the jobs in this process: one `Executor`, decoding ahead of the model and
    writing behind it in threads."""

    def __init__(self, session: Session, options: BatchOptions):
        self.executor = Executor(session, options)

    def run(self, jobs: Iterator[Job], recorder: Recorder, stop_requested: Callable[[], bool]
            ) -> None:
        """Do ``jobs``, handing each finished one to ``recorder``; after a stop request or
        a fatal write error, finish and record the jobs in flight, then return."""
        try:
            with contextlib.closing(self.executor.run(jobs, stop_requested)) as finished:
                for job in finished:
                    recorder.record(job)
                    if recorder.fatal is not None:
                        break
        finally:
            for job in self.executor.drain():
                recorder.record(job)
            self.executor.close()


def run_batch(inputs: Sequence[str], session: Session, options: BatchOptions,
              reporter: Reporter | None = None,
              stop_requested: Callable[[], bool] | None = None,
              engine=None) -> BatchSummary:
    """Explain every image under ``inputs`` into ``options.out_dir``.

    Returns a summary; per-input failures are manifest records, not exceptions.
    ``stop_requested`` is polled after each image: when it answers True, no new image is
    started, the pictures in flight are finished and recorded, and the summary says
    ``interrupted`` (the CLI's Ctrl-C handler sets it). A KeyboardInterrupt is handled
    the same way, as well as it can be.

    With ``options.shard = (K, N)`` only the K-th of N disjoint parts of the inputs is
    processed and recorded in ``manifest.K-of-N.jsonl``, so N processes can share one
    input tree and one output folder.

    ``engine`` runs the jobs (default: a `LocalEngine` of ``session``); ``session``
    itself says what each record answers.

    Raises:
        InputNotFound: an input names nothing (before any work).
        OutputError: the output folder cannot be written (before any work), or the disk
            filled up / became read-only during the run (after recording what was done).
        UsageProblem: with a class per image, some inputs' classes are unknown (before
            any work).
    """
    reporter = reporter or Reporter()
    stop_requested = stop_requested or (lambda: False)
    storage = session.storage
    check_inputs(inputs, storage)
    _prepare(options.out_dir, storage)
    started = time.perf_counter()
    done = {} if options.overwrite else latest(options.out_dir, keep=_files, storage=storage)
    total, items = with_classes(lambda: selected(inputs, options, storage), session.assigner)
    jobs = plan(items, options, functools.partial(request_of, session), session.plan.top_k,
                done, storage=storage)
    recorder = Recorder(ManifestWriter(locations.join(options.out_dir,
                                                      manifest_name(options.shard)), storage),
                        reporter, total)
    reporter.start(total)
    engine = engine or LocalEngine(session, options)
    try:
        engine.run(recorder.skip_done(jobs), recorder, stop_requested)
    except KeyboardInterrupt:
        recorder.summary.interrupted = True
    finally:
        recorder.writer.close()
        reporter.close()
    summary = recorder.summary
    summary.interrupted = summary.interrupted or stop_requested()
    summary.seconds = time.perf_counter() - started
    summary.metrics = recorder.means.result()
    if recorder.fatal is not None:
        reason = recorder.fatal.strerror or str(recorder.fatal)
        raise OutputError(
            f"cannot write to {options.out_dir}: {reason}. {summary.written} inputs were "
            "written and recorded before it; run the same command again to resume")
    return summary


def run(inputs: Sequence[str], model: ModelRequest, explain: ExplainRequest,
        options: BatchOptions, ray: RayOptions | None = None, reporter: Reporter | None = None,
        stop_requested: Callable[[], bool] | None = None, progress=None,
        storage: Storage | None = None, verbose: bool = False) -> BatchSummary:
    """``camcli batch``: open the session, run every input on the engine asked for (this
    process; with ``ray``, Ray Data's actors, while this process, which only plans and
    records, opens its session on the CPU and leaves the GPUs to them), then write the
    report when ``options.report`` asks for it.

    ``progress``: the hook of methods that show their own progress (Score-CAM).

    Raises:
        As `run_batch` does, and `camcli.run.session.open_session`; UsageProblem: Ray is
        not installed (with ``ray``).
    """
    storage = resolved(storage)
    check_inputs(inputs, storage)  # a missing path is reported before the model loads
    engine = None
    if ray is not None:
        from camcli.run.ray_engine import RayEngine  # says how to install Ray if missing

        engine = RayEngine(model, explain, options, ray, verbose, storage)
        model = dataclasses.replace(model, device="cpu")
    session = open_session(model, explain, progress, storage)
    summary = run_batch(inputs, session, options, reporter, stop_requested, engine)
    if options.report:
        from camcli.analysis.report import build_report

        summary.report = build_report(options.out_dir, options.workers, storage).path
    return summary


def _prepare(out_dir: str, storage: Storage) -> None:
    """Check that ``out_dir`` can be written, and clear what killed runs left in it."""
    store = storage.store(out_dir)
    try:
        store.check_writable(out_dir)
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {out_dir}: {exc.strerror or exc}") \
            from None
    leftovers = store.remove_leftovers(out_dir)
    if leftovers:
        log.info("removed %d temporary files left by an interrupted run", leftovers)

"""``camcli batch --engine ray``: the same jobs, scheduled on Ray Data.

The driver (this process) discovers the inputs, plans the jobs and keeps the books, exactly
as with the local engine (`camcli.run.batch.run_batch`). Ray Data only schedules: the jobs
become a dataset of rows, and ``map_batches`` hands them to a pool of `RayExplainer`
actors. Each actor loads the model once and runs the local engine's `Executor` on each
batch — decode, explain, draw, write atomically into the shared output folder — and
returns the batch's records. The driver streams them back and appends them to the
manifest as batches finish: only the driver writes the manifest.

Failures: an unreadable file is an error record, as locally. A batch whose actor dies
(a crash, the OOM killer, a lost node) is retried on a new actor (Ray's actor restarts);
one that keeps killing its actor is dropped after ``RayOptions.retries`` retries, its
inputs left unrecorded and counted as ``lost`` in the summary — the next run does them.

Ray is an optional dependency (``pip install 'camcli[ray]'``), imported only here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import warnings
from collections.abc import Callable, Iterator

from camcli.compute.backend import quiet_stderr
from camcli.errors import EngineError, UsageProblem
from camcli.io import locations
from camcli.io.storage import Storage, resolved
from camcli.options import BatchOptions, ExplainRequest, ModelRequest, RayOptions
from camcli.run.batch import Executor, Job, Recorder
from camcli.run.pipeline import batched

log = logging.getLogger("camcli")

#: Model batches per actor call: within a call the Executor decodes the next batch while
#: the model runs and writes behind it, as the local engine does; only call edges idle.
CALL_BATCHES = 4


def import_ray():
    """Import Ray and Ray Data, or say how to install them.

    Raises:
        UsageProblem: Ray is not installed.
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageProblem("the ray engine needs Ray Data, which is not installed: "
                           "pip install 'camcli[ray]'") from None
    return ray


class RayExplainer:
    """A Ray Data actor: loads the model once, then does batches of jobs.

    Jobs travel as one column, ``job``: each row a job's `Job.to_row` as JSON (None stays
    None, whatever Arrow would make of a column of them). The rows that come back are the
    finished jobs, records included, the same way.

    Args: the run's requests and options (frozen, so they travel as they are), and its
    `camcli.io.storage.Storage`: URLs are read and written by the actors themselves, with
    the driver's fsspec options; credentials and endpoints come from each node's own
    settings.
    """

    def __init__(self, model: ModelRequest, explain: ExplainRequest, options: BatchOptions,
                 verbose: bool = False, storage: Storage | None = None):
        from camcli.run.session import open_session

        logging.getLogger("camcli").setLevel(logging.INFO if verbose else logging.WARNING)
        self.out_dir = options.out_dir
        self.executor = Executor(open_session(model, explain, storage=storage), options)

    def __call__(self, batch: dict) -> dict:
        jobs = [Job.from_row(json.loads(row), self.out_dir) for row in batch["job"]]
        finished = [*self.executor.run(jobs), *self.executor.drain()]
        return {"job": [json.dumps(job.to_row(), ensure_ascii=False) for job in finished]}


class RayEngine:
    """Runs a batch's jobs on Ray Data (see the module docstring).

    Args:
        model, explain: the requests every actor opens its session with.
        options: the batch's options (the output folder must be reachable from every node).
        ray_options: the cluster, the actor pool and its resources.
        verbose: Ray's own progress bars and logs (off by default: one bar on the driver).
        storage: the run's storage settings, handed to every actor.
    """

    def __init__(self, model: ModelRequest, explain: ExplainRequest, options: BatchOptions,
                 ray_options: RayOptions = RayOptions(), verbose: bool = False,
                 storage: Storage | None = None):
        self.ray = import_ray()
        self.model, self.explain, self.verbose = model, explain, verbose
        self.storage = resolved(storage)
        # Workers run elsewhere (another folder, another node): give them absolute paths.
        self.options = dataclasses.replace(options, out_dir=locations.absolute(options.out_dir))
        self.ray_options = ray_options
        _check_reachable(ray_options.address)  # before the model loads

    def run(self, jobs: Iterator[Job], recorder: Recorder, stop_requested: Callable[[], bool]
            ) -> None:
        """Do ``jobs`` wave by wave, handing each finished one to ``recorder``."""
        with self._connected(), self._data_context():
            pool = self._pool()
            for wave in batched(jobs, self.ray_options.wave):
                pending = {job.key: job for job in wave}
                with contextlib.closing(self._results(list(pending.values()), pool)) as done:
                    for finished in done:
                        job = pending.pop(finished.key)
                        job.records, job.error, job.fatal = (finished.records, finished.error,
                                                             finished.fatal)
                        recorder.record(job)
                        if recorder.fatal is not None or stop_requested():
                            return
                if pending:
                    recorder.count_lost(pending.values())

    # -- Ray Data ---------------------------------------------------------------------

    def _results(self, wave: list[Job], pool: dict) -> Iterator[Job]:
        ray = self.ray
        rows = [{"job": json.dumps(job.to_row(), ensure_ascii=False)} for job in wave]
        with warnings.catch_warnings():
            # Ray 2.60 takes max_task_retries only as a "remote arg", which it deprecates
            # and says it will remove in 2.64 (camcli[ray] pins the tested versions).
            # Without it a batch that kills its actor every time would be retried for ever.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            dataset = ray.data.from_items(rows).map_batches(
                RayExplainer,
                fn_constructor_kwargs={"model": self.model, "explain": self.explain,
                                       "options": self.options, "verbose": self.verbose,
                                       "storage": self.storage},
                batch_size=self.options.batch_size * CALL_BATCHES, batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(min_size=pool["actors"][0],
                                                   max_size=pool["actors"][1]),
                num_cpus=pool["cpus"], num_gpus=pool["gpus"],
                max_task_retries=self.ray_options.retries)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for row in batch["job"]:
                yield Job.from_row(json.loads(row), self.options.out_dir)

    def _pool(self) -> dict:
        """The actor pool: its size and each actor's resources, defaults filled in."""
        ray, settings = self.ray, self.ray_options
        resources = ray.cluster_resources()
        gpus_here = resources.get("GPU", 0) if (self.model.device or "auto") != "cpu" else 0
        gpus = settings.gpus_per_actor
        if gpus is None:
            gpus = 1.0 if gpus_here else 0.0
        # An actor that asks for more than any node has would wait for ever.
        biggest = {kind: max((node["Resources"].get(kind, 0) for node in ray.nodes()
                              if node.get("Alive")), default=0) for kind in ("CPU", "GPU")}
        for kind, asked, param in (("GPU", gpus, "gpus_per_actor"),
                                   ("CPU", settings.cpus_per_actor, "cpus_per_actor")):
            if asked > biggest[kind]:
                raise UsageProblem(f"{{{param}}} {asked:g} is more than any node of the Ray "
                                   f"cluster has ({biggest[kind]:g} {kind}s at most)", (param,))
        actors = settings.actors
        if actors is None:
            if gpus:
                count = max(1, int(gpus_here / gpus))
            else:
                count = max(1, sum(1 for node in ray.nodes() if node.get("Alive")))
            actors = (count, count)
        log.info("ray: %s actors, each %g CPU and %g GPU, on a cluster of %g CPUs and %g GPUs",
                 actors[0] if actors[0] == actors[1] else f"{actors[0]}-{actors[1]}",
                 settings.cpus_per_actor, gpus, resources.get("CPU", 0),
                 resources.get("GPU", 0))
        return {"actors": actors, "cpus": settings.cpus_per_actor, "gpus": gpus}

    @contextlib.contextmanager
    def _connected(self):
        """Join the cluster (or start a local Ray); leave what this run started."""
        ray = self.ray
        if ray.is_initialized():
            yield
            return
        settings = {"address": self.ray_options.address, "include_dashboard": False}
        try:
            if self.verbose:
                ray.init(**settings)
            else:
                # Ray's C++ core logs an error line per actor pool that Ray Data itself
                # causes (ray-project/ray#53727), and a line at start saying it obeys this
                # setting; camcli reports what goes wrong itself.
                os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
                with quiet_stderr():
                    ray.init(**settings, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError) as exc:
            raise EngineError(f"cannot join the Ray cluster at "
                              f"{self.ray_options.address or 'this machine'}: "
                              f"{_first_line(exc)}") from None
        try:
            yield
        finally:
            ray.shutdown()

    @contextlib.contextmanager
    def _data_context(self):
        context = self.ray.data.DataContext.get_current()
        changes = {"enable_progress_bars": self.verbose, "print_on_execution_start": False,
                   # A batch lost for good must not end the run: its inputs stay
                   # unrecorded (counted as lost) and the next run does them.
                   "max_errored_blocks": -1}
        saved = {name: getattr(context, name) for name in changes}
        for name, value in changes.items():
            setattr(context, name, value)
        data_log = logging.getLogger("ray.data")
        saved_level = data_log.level
        data_log.setLevel(logging.INFO if self.verbose else logging.ERROR)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(context, name, value)
            data_log.setLevel(saved_level)


def _check_reachable(address: str | None, timeout: float = 10.0) -> None:
    """Fail fast when nothing answers at a ``host:port`` address: Ray itself waits for
    the cluster's control store for many minutes.

    Raises:
        EngineError: the address does not answer.
    """
    if not address or "://" in address or address in ("auto", "local"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"{address!r} is not a Ray cluster address (HOST:PORT)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise EngineError(f"cannot join the Ray cluster at {address}: nothing answers there "
                          f"({exc.strerror or exc}); is it started (ray start --head)?") \
            from None


def _first_line(exc: BaseException) -> str:
    """What went wrong, in a line: the root cause's first line (Ray wraps its causes, e.g.
    a missing authentication token, in a generic ConnectionError)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines and lines[0].startswith("Traceback") else (lines or [""])[0]

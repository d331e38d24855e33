"""``batch``: a tree of images into a mirrored tree of pictures and a manifest.
"""

from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from camcli.cli.app import (
    UsageFailure,
    flag,
    main,
    storage,
    translate_errors,
    verbosity,
)
from camcli.cli.explain import requests_of
from camcli.cli.params import (
    METRIC_KINDS,
    drawing_options,
    method_options,
    parse_actors,
    parse_shard,
)
from camcli.cli.present import (
    ProgressBar,
    graceful_ctrl_c,
    manifest_shown,
    progress_hook,
    say_metrics,
)
from camcli.errors import EXIT_INTERRUPTED
from camcli.options import (
    DEFAULT_METRIC_STEPS,
    BatchOptions,
    Given,
    RayOptions,
    RenderStyle,
    default,
)


@main.command(short_help="Explain a folder tree, glob or file list into --out, with a manifest.")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder; mirrors the input tree.")
@click.option("--pattern", "patterns", multiple=True, metavar="GLOB",
              help="File names to take when walking folders, e.g. '*.png' (repeatable; "
                   "case-insensitive). [default: common image extensions]")
@click.option("--save-maps", is_flag=True, help="Also write each low-resolution map as .npy.")
@click.option("--overwrite", is_flag=True, help="Redo inputs the manifest records as done.")
@click.option("--top-k", default=default(BatchOptions, "top_k"), show_default=True,
              type=click.IntRange(min=1), help="Classes listed in each manifest record's 'top'.")
@click.option("--workers", default=default(BatchOptions, "workers"), show_default=True,
              type=click.IntRange(min=1), help="Threads decoding and writing images.")
@click.option("--metrics", is_flag=False, flag_value="faithfulness", default=None,
              type=click.Choice(METRIC_KINDS),
              help="Also measure each map's faithfulness into the manifest: --metrics alone "
                   "or 'faithfulness': deletion / insertion AUC, average drop, increase in "
                   "confidence; 'road': ROAD's MoRF / LeRF with noisy linear imputation; "
                   "'all': both (docs/explanations/faithfulness.md).")
@click.option("--metric-steps", default=DEFAULT_METRIC_STEPS, show_default=True,
              type=click.IntRange(min=1),
              help="Deletion / insertion steps per image (each costs 2 forward passes).")
@click.option("--report", "report", is_flag=True,
              help="Also write OUT/index.html, the run's gallery (see camcli report).")
@click.option("--shard", default=None, metavar="K/N", callback=parse_shard,
              help="Process only the K-th of N disjoint parts of the inputs (stable by "
                   "relative path), recorded in manifest.K-of-N.jsonl: N processes or array "
                   "jobs can share one tree and one --out.")
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="local: this process. ray: Ray Data actors on this machine or a cluster "
                   "(pip install 'camcli[ray]'; see docs/SCALE.md).")
@click.option("--ray-address", default=default(RayOptions, "address"), metavar="ADDR",
              help="ray: join this running cluster. [default: start a local Ray]")
@click.option("--actors", default=None, metavar="N|MIN:MAX", callback=parse_actors,
              help="ray: actors in the pool, fixed or autoscaling. [default: one per GPU on "
                   "a GPU cluster, else one per node]")
@click.option("--cpus-per-actor", default=default(RayOptions, "cpus_per_actor"),
              show_default=True, type=click.FloatRange(min=0.0, min_open=True),
              help="ray: CPUs each actor reserves (fractions leave room for Ray Data's tasks).")
@click.option("--gpus-per-actor", default=default(RayOptions, "gpus_per_actor"),
              type=click.FloatRange(min=0.0), metavar="F",
              help="ray: GPUs each actor reserves; 0.25 puts four actors on a GPU. "
                   "[default: 1 on a cluster with GPUs, else 0]")
@method_options
@drawing_options
@click.pass_context
@translate_errors
def batch(ctx, inputs, method, metrics, metric_steps, engine, **options):
    """Explain every image under INPUT... (folders, quoted globs, files) into --out.

    Writes OUT/<relative path>.jpg per input (extension replaced by .jpg) and one JSON line
    per picture in OUT/manifest.jsonl. Re-running the same command skips inputs already
    done. Exit code: 0 all written, 1 some inputs failed (see the manifest), 2 usage error.
    """
    from camcli.run.batch import run

    ray_given = [name for name in ("ray_address", "actors", "cpus_per_actor", "gpus_per_actor")
                 if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)]
    if engine != "ray" and ray_given:
        raise UsageFailure(f"{', '.join(flag(n) for n in ray_given)} "
                           f"appl{'ies' if len(ray_given) == 1 else 'y'} to --engine ray only")
    given = Given(options)
    settings = given.build(BatchOptions, patterns=given.take("patterns") or None,
                           style=given.build(RenderStyle))
    model, explain = requests_of(
        given, method, road=metrics in ("road", "all"),
        metric_steps=metric_steps if metrics in ("faithfulness", "all") else None)
    ray = given.build(RayOptions, address=given.take("ray_address"))
    given.close()
    with graceful_ctrl_c() as stop:
        summary = run(inputs, model, explain, settings, ray if engine == "ray" else None,
                      ProgressBar(quiet=verbosity() < 0), stop.is_set,
                      progress_hook(explain.method), storage(), verbose=verbosity() > 0)
    lost = f", {summary.lost} not done (run again)" if summary.lost else ""
    click.echo(
        f"camcli: {summary.total} inputs: {summary.written} written, {summary.skipped} "
        f"already done, {summary.failed} failed{lost} in {summary.seconds:.1f} s "
        f"({summary.images_per_second:.1f} images/s). Overlays in {settings.out_dir}/, "
        f"records in {manifest_shown(summary.manifest)}"
        + (" (interrupted)" if summary.interrupted else ""),
        err=True,
    )
    if summary.metrics:
        say_metrics(summary.metrics)
    if summary.report:
        click.echo(f"camcli: report in {summary.report}", err=True)
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(1 if summary.failed or summary.lost else 0)

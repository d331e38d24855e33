"""``evaluate``: which method's heatmaps to believe on this model (`camcli.run.evaluate`)."""

from __future__ import annotations

import sys

import click

from camcli.cli.app import main, storage, translate_errors, verbosity
from camcli.cli.params import Location, model_options, target_options
from camcli.options import EvaluateOptions, ExplainRequest, Given, ModelRequest, default


def parse_methods(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return ()
    from camcli.compute.methods import METHODS

    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = [name for name in names if name != "all" and name not in METHODS]
    if unknown or not names:
        raise click.BadParameter(f"no method {', '.join(map(repr, unknown))}; choose from "
                                 f"all, {', '.join(METHODS)}")
    return names


def progress(phase: str, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc=phase, unit="step", file=sys.stderr,
                disable=verbosity() < 0, dynamic_ncols=True)


@main.command(short_help="Score every method on this model: sanity checks, faithfulness, "
                        "robustness; which map to believe.")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for evaluate.json and evaluate.html.")
@click.option("--methods", default=None, callback=parse_methods, metavar="M1,M2,...|all",
              help="The methods to score. [default: every method that applies to the model, "
                   "but scorecam and ablationcam (a pass per channel: name them, or 'all')]")
@click.option("--sample", default=default(EvaluateOptions, "sample"), show_default=True,
              type=click.IntRange(min=1), metavar="N",
              help="Images drawn (seeded) from the inputs; all of them when fewer.")
@click.option("--truth", type=Location(), default=None,
              help="Ground truth boxes (as 'camcli score' reads them): adds the pointing game "
                   "and MaxBoxAccV2.")
@click.option("--class-from", default=None, metavar="folder|FILE",
              help="A class per image, as for 'camcli batch'.")
@click.option("--skip-unknown-classes", is_flag=True,
              help="With --class-from: leave out images whose class the model does not have.")
@click.option("--mprt-steps", type=click.IntRange(min=1), default=None, metavar="K",
              help="At most K steps of the randomisation cascade, spread evenly from the "
                   "classifier to the whole model. [default: every block]")
@click.option("--noise-copies", default=default(EvaluateOptions, "noise_copies"),
              show_default=True, type=click.IntRange(min=1), metavar="K",
              help="Max-Sensitivity: noisy copies of each image.")
@click.option("--noise-range", default=default(EvaluateOptions, "noise_range"),
              show_default=True, type=click.FloatRange(0.0, 1.0, min_open=True), metavar="R",
              help="Max-Sensitivity: uniform noise within +-R of the pixel range.")
@click.option("--seed", default=default(EvaluateOptions, "seed"), show_default=True, type=int,
              help="Seed of the sample, the randomised weights, the random classes, the "
                   "noise.")
@click.option("--pattern", "patterns", multiple=True, metavar="GLOB",
              help="File names to take when walking folders (as for batch).")
@click.option("--workers", default=default(EvaluateOptions, "workers"), show_default=True,
              type=click.IntRange(min=1), help="Threads decoding images.")
@model_options
@target_options
@translate_errors
def evaluate(inputs, **options):
    """Score the methods on the model over a sample of INPUT... (folders, globs, files).

    For every method that applies: the sanity check (model parameter randomisation from
    the classifier down, Adebayo et al. 2018), random logit, ROAD, deletion and insertion
    AUC, Max-Sensitivity, Sparseness, Complexity, with --truth the pointing game and
    MaxBoxAccV2, and seconds per image. Prints the table, names the method to use, and
    writes OUT/evaluate.json and OUT/evaluate.html (docs/guides/evaluate.md).
    """
    from camcli.run.evaluate import evaluate as run

    given = Given(options)
    settings = given.build(EvaluateOptions, patterns=given.take("patterns") or None)
    model = given.build(ModelRequest)
    explain = given.build(ExplainRequest, method="gradcam")
    given.close()
    done = run(list(inputs), model, explain, settings, progress, storage())
    from camcli.analysis.scorecard import table

    click.echo(table(done.document))
    document = done.document
    click.echo(f"camcli: {len(document['methods'])} methods on {document['images']} images; "
               f"scorecard in {done.json_path}, report in {done.page_path}", err=True)
    if document["failed"]:
        click.echo(f"camcli: {len(document['failed'])} sampled inputs could not be read "
                   "(see evaluate.json)", err=True)

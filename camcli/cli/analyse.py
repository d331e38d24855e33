"""``score``, ``audit``, ``report``: what a finished run's records and maps say (no model).
"""

from __future__ import annotations

import json
import sys

import click

from camcli.cli.app import main, storage, translate_errors, verbosity_options
from camcli.cli.params import Location, parse_clusters
from camcli.options import AuditOptions, Given, ScoreOptions, default


@main.command(short_help="Find the strategies a model uses in a run's saved maps (SpRAy).")
@click.argument("out_dir", type=Location(folder=True))
@click.option("--class", "classes", multiple=True, metavar="NAME",
              help="Audit this explained class (repeatable). [default: every class]")
@click.option("--clusters", default="auto", show_default=True, metavar="auto|K",
              callback=parse_clusters,
              help="How many clusters per class: the eigengap's choice, or K.")
@click.option("--max-clusters", default=default(AuditOptions, "max_clusters"),
              show_default=True, type=click.IntRange(2, 50),
              help="Eigenvalues looked at for the eigengap.")
@click.option("--grid", default=default(AuditOptions, "grid"), show_default=True,
              type=click.IntRange(2, 256),
              help="Maps are resized to GRID x GRID before they are compared.")
@click.option("--min-images", default=default(AuditOptions, "min_images"), show_default=True,
              type=click.IntRange(2), help="Classes with fewer saved maps are skipped.")
@click.option("--truth", default=None, type=Location(),
              help="camcli score's truth table: each cluster's share of map mass inside "
                   "the objects' boxes; mostly outside is flagged.")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json"]))
@click.option("--report/--no-report", "make_report",
              default=default(AuditOptions, "make_report"), show_default=True,
              help="Also write OUT_DIR/index.html, the run's gallery with the audit on top "
                   "(see camcli report).")
@verbosity_options
@translate_errors
def audit(out_dir, fmt, **options):
    """Cluster each class's saved maps (batch --save-maps) by spectral relevance analysis
    (Lapuschkin et al. 2019): groups of images whose maps agree with each other and differ
    from the rest are the strategies the model uses; a group looking outside the objects
    (or always at one corner) is a shortcut. Writes OUT_DIR/audit.json and the run's
    report, OUT_DIR/index.html, with an Audit section."""
    from camcli.analysis import audit as auditing

    given = Given(options)
    settings = given.build(AuditOptions)
    given.close()
    done = auditing.run(out_dir, settings, storage())
    click.echo(json.dumps(done.document, indent=2, ensure_ascii=False) if fmt == "json"
               else auditing.table(done.document["classes"]))
    if done.report:
        click.echo(f"camcli: audit shown in the report {done.report}", err=True)


@main.command()
@click.argument("out_dir", type=Location(folder=True))
@verbosity_options
@translate_errors
def report(out_dir):
    """Write OUT_DIR/index.html: a self-contained gallery of a batch run.

    Thumbnails of each photo and overlay, predicted and explained classes, metrics and
    errors; sort, filter and pages. Opens offline, from a file:// URL.
    """
    from camcli.analysis.report import build_report

    made = build_report(out_dir, storage=storage())
    click.echo(made.path)
    click.echo(f"camcli: report of {made.items} records ({made.errors} errors); "
               f"{made.thumbnails_made} thumbnails made", err=True)


@main.command(short_help="Score a run against ground truth: pointing game, localisation, "
                        "top-1/5.")
@click.argument("manifests", nargs=-1, required=True, metavar="MANIFEST|OUT_DIR...")
@click.option("--truth", required=True, type=Location(),
              help="Ground truth: CSV (input,class,x0,y0,x1,y1), JSON lines, or COCO JSON.")
@click.option("--labels", "labels_file", type=Location(),
              help="The model's class names, one per line (default: ImageNet's, or the "
                   "names the records show).")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json"]))
@click.option("--min-pointing", type=click.FloatRange(0.0, 1.0), default=None, metavar="X",
              help="Exit 1 when the pointing game is below X (a fraction, e.g. 0.8).")
@click.option("--min-loc", type=click.FloatRange(0.0, 1.0), default=None, metavar="X",
              help="Exit 1 when the localisation accuracy is below X (needs batch --boxes, "
                   "or --box-threshold).")
@click.option("--box-threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
              metavar="T", help="Localise with boxes derived again from the run's saved maps "
                                "(batch --save-maps) at T, without running the model: try "
                                "the calibrated threshold in seconds.")
@verbosity_options
@translate_errors
def score(manifests, fmt, **options):
    """Score a batch run (its manifest, or its output folder) against ground truth.

    Prints, per class and overall, classification top-1 and top-5, the pointing game (the
    map's peak within 15 px of a true box; Zhang et al. 2016), for runs with --boxes
    localisation accuracy (IoU >= 0.5; Zhou et al. 2016) and mean IoU, and for runs with
    --save-maps MaxBoxAccV2 (Choe et al. 2020) and the calibrated --box-threshold.
    --min-pointing and --min-loc make it exit 1 below a threshold, for CI.
    """
    from camcli.analysis.score import gates, score, table

    given = Given(options)
    settings = given.build(ScoreOptions)
    given.close()
    scores = score(list(manifests), settings, storage())
    click.echo(json.dumps(scores.to_json(), indent=2) if fmt == "json" else table(scores))
    if scores.without_truth:
        click.echo(f"camcli: {scores.without_truth} of {scores.inputs} inputs have no row in "
                   f"{settings.truth}", err=True)
    if scores.unresolved:
        click.echo(f"camcli: classes of {settings.truth} the model's labels do not have: "
                   f"{', '.join(scores.unresolved[:10])}", err=True)
    failed = gates(scores, settings)
    if failed:
        click.echo("Error: " + "; ".join(failed), err=True)
        sys.exit(1)

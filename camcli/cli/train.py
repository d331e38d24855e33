"""``train``: a CAM head for the user's own classes.
"""

from __future__ import annotations

import os

import click

from camcli.cli.app import UsageFailure, log, main, storage, translate_errors, verbosity
from camcli.cli.params import Location, model_options
from camcli.cli.present import ProgressBar, command_line
from camcli.options import Given, ModelRequest, TrainOptions, default


@main.command(short_help="Train a CAM head for your own classes (one sub-folder each).")
@click.argument("tree", type=Location(folder=True))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="The model to write: one .keras file (and its .json report beside it). "
                   " [required]")
@click.option("--out", "legacy_out", type=click.Path(dir_okay=False), hidden=True,
              help="The old name of -o/--output (--out names a folder elsewhere).")
@model_options
@click.option("--layer", "layer", default=None, metavar="NAME",
              help="The backbone's feature layer the head pools. [default: the model's "
                   "registered layer, else the last spatial feature map]")
@click.option("--val-split", default=default(TrainOptions, "val_split"), show_default=True,
              type=click.FloatRange(0.0, 0.9),
              help="Fraction of each class held out to validate (stratified, seeded).")
@click.option("--epochs", default=default(TrainOptions, "epochs"), show_default=True,
              type=click.IntRange(min=1), help="The most epochs (early stopping ends sooner).")
@click.option("--patience", default=default(TrainOptions, "patience"), show_default=True,
              type=click.IntRange(min=1),
              help="Epochs without a better validation loss before stopping.")
@click.option("--seed", default=default(TrainOptions, "seed"), show_default=True, type=int,
              help="Seed of the split and the training: same seed, same weights.")
@click.option("--augment", is_flag=True,
              help="Also train on each training image flipped left-right (doubles the "
                   "backbone's work for them).")
@click.option("--overwrite", is_flag=True, help="Replace -o/--output if it exists.")
@click.option("--pattern", "patterns", multiple=True, metavar="GLOB",
              help="File names to take (repeatable). [default: common image extensions]")
@click.option("--workers", default=default(TrainOptions, "workers"), show_default=True,
              type=click.IntRange(min=1), help="Threads decoding images.")
@translate_errors
def train(tree, output, legacy_out, layer, batch_size, patterns, **options):
    """Train a classifier head on TREE's classes (one sub-folder per class), on a frozen
    backbone, and write one self-contained .keras model.

    The backbone's pooled features are computed once; a global-average-pooling -> Dense
    head is fitted with Keras (seeded stratified validation split, early stopping). The
    model carries its class names and target layer: 'camcli cam --model MODEL.keras' and
    'camcli batch TREE --model MODEL.keras --class-from folder' work on it directly.
    """
    from camcli.run.train import train as fit

    if options.get("labels_file"):
        raise UsageFailure("--labels names a model's classes; train names its classes after "
                           "TREE's folders")
    if legacy_out is not None:
        if output is not None:
            raise UsageFailure("give -o/--output once (--out is its old name)")
        log.warning("train --out is now -o/--output (--out names a folder in the other "
                    "commands); --out still works")
        output = legacy_out
    if output is None:  # required, with its old name as the other way to give it
        context = click.get_current_context()
        raise click.MissingParameter(ctx=context, param=next(
            p for p in context.command.params if p.name == "output"))
    given = Given(options)
    settings = given.build(TrainOptions, output=output, batch_size=batch_size,
                           patterns=patterns or None)
    model = given.build(ModelRequest)
    given.close()
    report = fit(tree, model, settings, ProgressBar(quiet=verbosity() < 0),
                 layers=(layer,) if layer else (), command=command_line(), storage=storage())
    click.echo(f"{output}: {len(report.classes)} classes, "
               f"{sum(c['train'] for c in report.counts.values())} training and "
               f"{sum(c['validation'] for c in report.counts.values())} validation images, "
               f"{report.epochs} epochs in {report.seconds:.1f} s")
    if report.val_top1 is not None:
        click.echo(f"validation: top-1 {report.val_top1:.1%}, top-5 {report.val_top5:.1%}")
        for name, accuracy in report.per_class.items():
            shown = "n/a" if accuracy is None else f"{accuracy:.1%}"
            click.echo(f"  {name:<30} {shown:>7}  ({report.counts[name]['validation']} "
                       "validation images)")
        for pair in report.confused:
            click.echo(f"  confused: {pair['true']} -> {pair['predicted']} "
                       f"({pair['images']} images)")
    if report.skipped:
        click.echo(f"camcli: {len(report.skipped)} files skipped (listed in the report)",
                   err=True)
    click.echo(f"camcli: report in {os.path.splitext(output)[0]}.json", err=True)

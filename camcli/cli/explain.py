"""``predict``, ``cam``, ``gradcam``, ``explain``: one image or a few, in this process.
"""

from __future__ import annotations

import csv
import json
import sys

import click

from camcli.cli.app import UsageFailure, main, storage, translate_errors
from camcli.cli.params import (
    drawing_options,
    method_options,
    model_options,
    single_image_options,
    target_options,
)
from camcli.cli.present import json_prediction, print_table_row, progress_hook
from camcli.options import BatchOptions, ExplainRequest, Given, ModelRequest, RenderStyle, default


def requests_of(given: Given, method: str | None, **explain
               ) -> tuple[ModelRequest, ExplainRequest]:
    """The request objects of a command's options."""
    return given.build(ModelRequest), given.build(ExplainRequest, method=method, **explain)


def open_session(model: ModelRequest, explain: ExplainRequest, store):
    """Load the model and split it as asked (the one way every command does)."""
    from camcli.run.session import open_session

    return open_session(model, explain, progress_hook(explain.method), store)


@main.command()
@click.argument("images", nargs=-1, required=True)
@model_options
@target_options
@click.option("--top-k", default=default(BatchOptions, "top_k"), show_default=True,
              type=click.IntRange(min=1), help="How many classes to list per image.")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json", "csv"]),
              help="table for people; json and csv for scripts (stdout holds nothing else).")
@translate_errors
def predict(images, top_k, fmt, batch_size, **options):
    """Print the top-k classes and probabilities of each image."""
    from camcli.io.inputs import check_inputs, discover
    from camcli.run.api import Explaining

    store = storage()
    check_inputs(images, store)
    given = Given(options)
    requests = requests_of(given, None)
    given.close()
    explaining = Explaining(open_session(*requests, store))
    rows, failed = [], 0
    for result in explaining.explain_many(discover(images, storage=store), batch_size,
                                          on_error="keep"):
        if result.error:
            failed += 1
            click.echo(f"Error: {result.input}: {result.error}", err=True)
        rows.append({"input": result.input, "top": result.top(top_k),
                     "error": result.error})
        if fmt == "table":
            print_table_row(rows.pop())
    if fmt == "json":
        click.echo(json.dumps([json_prediction(r) for r in rows], indent=2, ensure_ascii=False))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["input", "rank", "class_index", "label", "probability", "error"])
        for row in rows:
            if row["error"]:
                writer.writerow([row["input"], "", "", "", "", row["error"]])
            for rank, (index, label, probability) in enumerate(row["top"], 1):
                writer.writerow([row["input"], rank, index, label, f"{probability:.6f}", ""])
    sys.exit(1 if failed else 0)


@main.command(short_help="CAM overlays (Zhou et al. 2016), one per image.")
@single_image_options
@drawing_options
@translate_errors
def cam(images, output, out_dir, batch_size, **options):
    """CAM overlays (Zhou et al. 2016) for one or more images.

    The map is the classifier's weights for the class applied to the last feature maps; it
    needs a global-average-pooling -> Dense head (ResNet50, MobileNetV2, EfficientNetB0). For
    other models use gradcam. Writes <stem>_cam.jpg per image.
    """
    explain_images_command("cam", images, output, out_dir, batch_size, options)


@main.command(short_help="Grad-CAM overlays (Selvaraju et al. 2017), one per image.")
@single_image_options
@drawing_options
@translate_errors
def gradcam(images, output, out_dir, batch_size, **options):
    """Grad-CAM overlays (Selvaraju et al. 2017) for one or more images.

    Channel weights are the spatial mean of the gradient of the class's pre-softmax logit;
    works on any convolutional layer of any model (--layer). Writes <stem>_gradcam.jpg per
    image.
    """
    explain_images_command("gradcam", images, output, out_dir, batch_size, options)


@main.command(short_help="Overlays by any CAM method, one per image.")
@single_image_options
@method_options
@drawing_options
@translate_errors
def explain(images, output, out_dir, method, batch_size, **options):
    """Overlays by any method (--method) for one or more images.

    \b
    Methods ('camcli methods' describes them): cam, gradcam, gradcam++, xgradcam,
    hirescam, layercam, eigencam, scorecam, ablationcam, eigengradcam, gradcam-elementwise,
    kpcacam, shapleycam, finercam, fullgrad, randomcam (a baseline); for vision
    transformers' attention, rollout and gradrollout.
    Writes <stem>_<method>.jpg per image (--top-k-maps: <stem>_<method>.<rank>-<label>.jpg).
    """
    explain_images_command(method, images, output, out_dir, batch_size, options)


def explain_images_command(method: str, images, output, out_dir, batch_size, options: dict) -> None:
    """What ``cam``, ``gradcam`` and ``explain`` share: check, explain, write, report."""
    from camcli.io.inputs import check_inputs, discover
    from camcli.run.single import explain_images

    if output and out_dir:
        raise UsageFailure("give either -o/--output (one image) or --out (a folder)")
    if output and options.get("top_k_maps"):
        raise UsageFailure("--top-k-maps writes several files: use --out DIR, not -o")
    store = storage()
    check_inputs(images, store)
    items = list(discover(images, storage=store))
    if output and len(items) != 1:
        raise UsageFailure(f"-o/--output takes one image, got {len(items)}; use --out DIR")
    given = Given(options)
    style = given.build(RenderStyle)
    requests = requests_of(given, method)
    given.close()
    session = open_session(*requests, store)
    failed = 0
    for written in explain_images(items, session, output, out_dir, style, batch_size):
        if written.error:
            failed += 1
            click.echo(f"Error: {written.input}: {written.error}", err=True)
        else:
            box = f", box {written.box}" if written.box is not None else ""
            click.echo(f"{written.output}: {written.label} (class {written.class_index}) "
                       f"{written.score:.1%}{box}")
    sys.exit(1 if failed else 0)

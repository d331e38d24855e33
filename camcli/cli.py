"""The ``camcli`` command line: parse, validate, call the library, report.

Nothing here computes anything. Library errors become one-line ``Error: ...`` messages:
exit code 2 for requests that cannot be served as asked (`UsageProblem`), 1 for other
failures; ``batch`` exits 1 when any input failed. TensorFlow is imported only inside
command bodies, so ``camcli --help`` and ``--version`` are instant.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import json
import logging
import os
import re
import signal
import sys
import threading

import click
from click.core import ParameterSource

from camcli import __version__
from camcli.backend import PRECISIONS
from camcli.errors import CamcliError, UsageProblem
from camcli.methods import METHODS
from camcli.methods.base import FUSE_MODES, SMOOTHINGS
from camcli.methods.eigencam import KERNELS
from camcli.models.preprocess import PREPROCESSORS
from camcli.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_METRIC_STEPS,
    BatchOptions,
    ExplainRequest,
    Given,
    ModelRequest,
    RayOptions,
    RenderStyle,
    TrainOptions,
    default,
)

log = logging.getLogger("camcli")

# The registries feed the choices (they import NumPy, ~80 ms; never TensorFlow or OpenCV).
METHOD_NAMES = tuple(METHODS)
PREPROCESS_NAMES = tuple(PREPROCESSORS)
EXIT_INTERRUPTED = 130
#: What --metrics measures (--metrics alone: faithfulness).
METRIC_KINDS = ("faithfulness", "road", "all")


class Location(click.ParamType):
    """A local file or folder that must exist (as ``click.Path(exists=True)``), or a URL
    (``s3://...``), which its store checks where it is read."""

    name = "path"

    def __init__(self, folder: bool = False):
        self.folder = folder
        self._local = click.Path(exists=True, file_okay=not folder, dir_okay=folder)

    def convert(self, value, param, ctx):
        from camcli.storage import is_url

        if is_url(str(value)):
            return str(value)
        return self._local.convert(value, param, ctx)


class UsageFailure(click.ClickException):
    """A request that cannot be served as asked: ``Error: ...`` and exit code 2."""

    exit_code = 2


def translate_errors(command):
    """Turn camcli's library errors into click errors with one-line messages; the
    parameters a message names are spelled as this command's options (``--top-k-maps``)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UsageProblem as exc:
            raise UsageFailure(exc.render(_flag)) from None
        except CamcliError as exc:
            raise click.ClickException(exc.render(_flag)) from None

    return wrapper


def _flag(name: str) -> str:
    """The option of the current command that sets parameter ``name`` (its long form)."""
    context = click.get_current_context(silent=True)
    for param in context.command.params if context else ():
        if param.name == name and isinstance(param, click.Option):
            return max(param.opts, key=len)
    return name


# -- logging and verbosity --------------------------------------------------------------


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value:
        return
    state = ctx.find_root().ensure_object(dict)
    state["verbosity"] = -1 if param.name == "quiet" else 1
    _configure_logging(state["verbosity"])  # -q / -v may follow the command's name


def _configure_logging(verbosity: int) -> None:
    level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}[verbosity]
    if verbosity > 0:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("camcli: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def verbosity_options(command):
    """-v, -q and --storage-option: what every command takes."""
    command = click.option("-v", "--verbose", "verbose", is_flag=True, expose_value=False,
                           callback=_set_verbosity, help="Log more (debug details).")(command)
    command = click.option("-q", "--quiet", "quiet", is_flag=True, expose_value=False,
                           callback=_set_verbosity,
                           help="Only warnings and errors on stderr; no progress bar.")(command)
    command = click.option("--storage-option", "storage_options", multiple=True,
                           metavar="KEY=VALUE", expose_value=False, is_eager=True,
                           callback=_set_storage_options,
                           help="Passed to fsspec for URLs (s3://, gs://, az://), e.g. "
                                "anon=true; credentials and endpoints come from each "
                                "store's standard settings (AWS_* variables...).")(command)
    return command


def _set_storage_options(ctx: click.Context, param: click.Parameter, values) -> None:
    from camcli import storage

    options = {}
    for value in values:
        key, sep, setting = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", ctx=ctx, param=param)
        options[key.strip()] = setting
    storage.configure(options)


def _verbosity() -> int:
    return click.get_current_context().find_root().ensure_object(dict).get("verbosity", 0)


# -- option bundles (defined once, stacked on every command that needs them) -------------
# Defaults come from the request objects in camcli.options, never from here.


def _stack(command, options):
    for option in reversed(options):
        command = option(command)
    return command


def model_options(command):
    """--model, --weights, --labels, --preprocess, --device, --batch-size, --precision,
    --unsafe-model-code (and -q / -v)."""
    return verbosity_options(_stack(command, [
        click.option("--model", default=default(ModelRequest, "model"), show_default=True,
                     metavar="NAME|PATH",
                     help="Built-in model (see 'camcli models'; the default works offline) "
                          "or a .keras / .h5 file."),
        click.option("--weights", default=default(ModelRequest, "weights"), show_default=True,
                     metavar="imagenet|none|FILE",
                     help="Weights of a built-in model: Keras' ImageNet download, random "
                          "(testing only) or a Keras weights file."),
        click.option("--labels", "labels_file", type=Location(),
                     help="Class names in class order: one per line, or JSON (a list, or "
                          "{index: name}) (custom models)."),
        click.option("--preprocess", type=click.Choice(PREPROCESS_NAMES),
                     help="Input preprocessing for a model file [default for files: none]."),
        click.option("--device", default=None, metavar="auto|cpu|gpu|gpu:N",
                     help="Where to run. [default: $CAMCLI_DEVICE, else auto]"),
        click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True,
                     type=click.IntRange(min=1), help="Images per forward pass."),
        click.option("--precision", default=default(ModelRequest, "precision"),
                     show_default=True, type=click.Choice(PRECISIONS),
                     help="Model compute precision. fp32 gives the model's own numbers; "
                          "bf16 (fast on CPUs with AVX-512 BF16/AMX) and fp16 (GPUs) trade "
                          "accuracy for speed, auto picks them where they are fast. Maps are "
                          "always computed in fp32."),
        click.option("--unsafe-model-code", is_flag=True,
                     help="Run Python code stored in a model file (Lambda layers). Model "
                          "files are loaded safely without it; use only for files you trust."),
    ]))


def target_options(command):
    """--layer, --fuse, --class, --token-grid, --prefix-tokens: what in the model is
    explained."""
    return _stack(command, [
        click.option("--layer", "layers", multiple=True, metavar="NAME",
                     help="Target layer (name, or path through nested models and the "
                          "layers a layer holds: 'resnet50/conv5_block3_out'; ':input' "
                          "explains what it receives: 'vit_encoder/transformer_block_12:"
                          "input'; 'camcli layers MODEL' lists them); repeat it to fuse "
                          "several layers' maps (--fuse). Default: the model's registered "
                          "layer, else a transformer's last block's first LayerNormalization, "
                          "else the last spatial feature map."),
        click.option("--fuse", default=default(ExplainRequest, "fuse"), show_default=True,
                     type=click.Choice(FUSE_MODES),
                     help="With several --layer: fuse their normalised maps, upsampled to "
                          "the finest grid, by their mean or maximum."),
        click.option("--class", "class_spec", default=None, metavar="INDEX|NAME",
                     help="Class to explain: index, WordNet id or unambiguous name. "
                          "[default: each image's top-1 prediction]"),
        click.option("--token-grid", default=None, metavar="HxW", callback=_parse_grid,
                     help="Token layers (vision transformers): the grid of patches, when "
                          "the model's config and the token count do not say it."),
        click.option("--prefix-tokens", type=click.IntRange(min=0), default=None,
                     metavar="N",
                     help="Token layers: the class, distillation and register tokens before "
                          "the patches, when the token count does not say it."),
    ])


def render_options(command):
    """--alpha, --colormap, --quality, --panel."""
    return _stack(command, [
        click.option("--alpha", default=default(RenderStyle, "alpha"), show_default=True,
                     type=click.FloatRange(0.0, 1.0),
                     help="Weight of the heatmap in the blend (0: photo only, 1: heatmap only)."),
        click.option("--colormap", default=default(RenderStyle, "colormap"), show_default=True,
                     metavar="NAME", callback=_check_colormap,
                     help="OpenCV colour map: jet, turbo, viridis, inferno, magma, hot, ..."),
        click.option("--quality", default=default(RenderStyle, "quality"), show_default=True,
                     type=click.IntRange(1, 100), help="JPEG quality of the pictures."),
        click.option("--panel", is_flag=True,
                     help="Write original | heatmap | overlay side by side, with the class "
                          "and probability written above (for bug reports)."),
    ])


def method_options(command):
    """--method, --top-k-maps, --smooth and the methods' own options (``explain`` and
    ``batch``)."""
    return _stack(command, [
        click.option("--method", default=default(ExplainRequest, "method"), show_default=True,
                     type=click.Choice(METHOD_NAMES),
                     help="The method (see 'camcli methods')."),
        click.option("--top-k-maps", type=click.IntRange(min=1), default=None, metavar="K",
                     help="One picture per each of the top-K classes, named "
                          "<name>.<rank>-<label>.jpg; one manifest record each, with 'rank'."),
        click.option("--smooth", type=click.Choice(SMOOTHINGS), default=None,
                     help="aug: average the maps of the image and its mirror image, each at "
                          "brightness x0.9, x1, x1.1 (6 passes); eigen: the weighted maps' "
                          "first principal component instead of their sum."),
        click.option("--max-maps", type=click.IntRange(min=1), default=None, metavar="K",
                     help="scorecam, ablationcam: use only the K activation maps of highest "
                          "variance (Faster Score-CAM). [default: all channels]"),
        click.option("--scorecam-batch", type=click.IntRange(min=1), show_default=True,
                     default=default(ExplainRequest, "scorecam_batch"), metavar="N",
                     help="scorecam: masked images per forward pass."),
        click.option("--finer-alpha", type=float, show_default=True,
                     default=default(ExplainRequest, "finer_alpha"), metavar="A",
                     help="finercam: how much of the similar classes' logits is subtracted."),
        click.option("--finer-classes", type=click.IntRange(min=1), show_default=True,
                     default=default(ExplainRequest, "finer_classes"), metavar="N",
                     help="finercam: the N classes whose logits are closest to the "
                          "explained class's are compared with it."),
        click.option("--kernel", type=click.Choice(KERNELS), show_default=True,
                     default=default(ExplainRequest, "kernel"),
                     help="kpcacam: the kernel of its kernel PCA."),
        click.option("--seed", type=int, show_default=True,
                     default=default(ExplainRequest, "seed"),
                     help="randomcam: the seed of its random channel weights."),
    ])


def class_options(command):
    """--class-from, --skip-unknown-classes (beside --class), --boxes, --box-threshold:
    for the commands that draw."""
    return _stack(command, [
        click.option("--class-from", default=None, metavar="folder|FILE",
                     help="A class per image: 'folder' (each image's parent folder names "
                          "it, as in Caltech101/airplanes/x.jpg) or a CSV / JSON-lines table "
                          "(input,class); names go through the model's labels."),
        click.option("--skip-unknown-classes", is_flag=True,
                     help="With --class-from: give images whose class the model does not "
                          "have an error record instead of refusing the run."),
        click.option("--boxes", is_flag=True,
                     help="Find each map's object box (the largest region above "
                          "--box-threshold of its maximum, as in the CAM paper); draw it and "
                          "record it as [x0, y0, x1, y1] in photo pixels."),
        click.option("--box-threshold", default=default(ExplainRequest, "box_threshold"),
                     show_default=True, type=click.FloatRange(0.0, 1.0, min_open=True),
                     metavar="T", help="With --boxes: the fraction of the map's maximum a "
                                       "box keeps."),
    ])


def drawing_options(command):
    """Everything the commands that draw share (``cam``, ``gradcam``, ``explain``,
    ``batch``): class, model, target and render options, in that order."""
    return class_options(model_options(target_options(render_options(command))))


def single_image_options(command):
    """-o/--output, --out: where ``cam``, ``gradcam`` and ``explain`` write."""
    return _stack(command, [
        click.argument("images", nargs=-1, required=True),
        click.option("-o", "--output", type=click.Path(dir_okay=False),
                     help="Output file (one image). [default: <stem>_<method>.jpg]"),
        click.option("--out", "out_dir", type=click.Path(file_okay=False),
                     help="Folder for the pictures (several images)."),
    ])


def _parse_shard(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise click.BadParameter(f"{value!r} is not K/N with 1 <= K <= N (e.g. 3/8)")
    return int(match.group(1)), int(match.group(2))


def _parse_grid(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
    if not match or not int(match.group(1)) or not int(match.group(2)):
        raise click.BadParameter(f"{value!r} is not HxW with H, W >= 1 (e.g. 14x14)")
    return int(match.group(1)), int(match.group(2))


def _parse_actors(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        low, _, high = value.strip().partition(":")
        actors = int(low), int(high or low)
    except ValueError:
        actors = (0, 0)
    if not 1 <= actors[0] <= actors[1]:
        raise click.BadParameter(f"{value!r} is not N or MIN:MAX with 1 <= MIN <= MAX")
    return actors


def _check_colormap(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from camcli.render import COLORMAPS

    name = value.lower()
    if name not in COLORMAPS:
        raise click.BadParameter(f"{value!r} is not an OpenCV colour map; choose from "
                                 f"{', '.join(sorted(COLORMAPS))}")
    return name


def _requests(given: Given, method: str | None, **explain
               ) -> tuple[ModelRequest, ExplainRequest]:
    """The request objects of a command's options."""
    return given.build(ModelRequest), given.build(ExplainRequest, method=method, **explain)


def _open_session(model: ModelRequest, explain: ExplainRequest):
    """Load the model and split it as asked (the one way every command does)."""
    import functools

    from camcli.session import open_session

    return open_session(model, explain, progress=functools.partial(_inner_progress,
                                                                   explain.method))


def _inner_progress(method: str, total: int):
    """A slow method's inner progress bar (Score-CAM's masked images, Ablation-CAM's
    ablated channels, of the current batch)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="map", desc=method, leave=False, file=sys.stderr,
                disable=_verbosity() < 0, position=1, dynamic_ncols=True)


# -- commands ------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="camcli")
@verbosity_options
def main():
    """camcli: where does an image classifier look?

    Runs a Keras model over photos and writes class-activation heatmaps (CAM, Grad-CAM)
    blended over each photo, plus a JSON record of what the model predicted.

    \b
    Examples:
      camcli predict photo.jpg
      camcli cam photo.jpg
      camcli gradcam --layer block5_conv3 --model vgg16 photo.png
      camcli batch ./Caltech101 --out heatmaps --class-from folder --boxes
      camcli score heatmaps --truth boxes.csv --min-pointing 0.8
      camcli train ./my_classes -o mine.keras
    """
    _configure_logging(_verbosity())  # every command logs alike; -q / -v change it


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
    from camcli.inputs import check_inputs, discover

    check_inputs(images)
    given = Given(options)
    requests = _requests(given, None)
    given.close()
    session = _open_session(*requests)
    rows, failed = [], 0
    for result in session.stream(discover(images), batch_size):
        if result.error:
            failed += 1
            click.echo(f"Error: {result.input.path}: {result.error}", err=True)
        rows.append({"input": result.input.path, "top": result.top(top_k, session.labels),
                     "error": result.error})
        if fmt == "table":
            _print_table_row(rows.pop())
    if fmt == "json":
        click.echo(json.dumps([_json_prediction(r) for r in rows], indent=2, ensure_ascii=False))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["input", "rank", "class_index", "label", "probability", "error"])
        for row in rows:
            if row["error"]:
                writer.writerow([row["input"], "", "", "", "", row["error"]])
            for rank, (index, label, probability) in enumerate(row["top"], 1):
                writer.writerow([row["input"], rank, index, label, f"{probability:.6f}", ""])
    sys.exit(1 if failed else 0)


def _json_prediction(row: dict) -> dict:
    top = [{"class_index": i, "label": label, "probability": p} for i, label, p in row["top"]]
    return {"input": row["input"], "top": top, "error": row["error"]}


def _print_table_row(row: dict) -> None:
    if row["error"]:
        return
    click.echo(row["input"])
    for rank, (index, label, probability) in enumerate(row["top"], 1):
        click.echo(f"  {rank}. {label:<30} {probability:7.2%}  (class {index})")


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
    _explain_images("cam", images, output, out_dir, batch_size, options)


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
    _explain_images("gradcam", images, output, out_dir, batch_size, options)


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
    kpcacam, shapleycam, finercam, fullgrad, randomcam (a baseline).
    Writes <stem>_<method>.jpg per image (--top-k-maps: <stem>_<method>.<rank>-<label>.jpg).
    """
    _explain_images(method, images, output, out_dir, batch_size, options)


def _explain_images(method: str, images, output, out_dir, batch_size, options: dict) -> None:
    """What ``cam``, ``gradcam`` and ``explain`` share: check, explain, write, report."""
    from camcli.inputs import check_inputs, discover
    from camcli.single import explain_images

    if output and out_dir:
        raise UsageFailure("give either -o/--output (one image) or --out (a folder)")
    if output and options.get("top_k_maps"):
        raise UsageFailure("--top-k-maps writes several files: use --out DIR, not -o")
    check_inputs(images)
    items = list(discover(images))
    if output and len(items) != 1:
        raise UsageFailure(f"-o/--output takes one image, got {len(items)}; use --out DIR")
    given = Given(options)
    style = given.build(RenderStyle)
    requests = _requests(given, method)
    given.close()
    session = _open_session(*requests)
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


@main.command()
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json"]))
@verbosity_options
def models(fmt):
    """List the built-in models: input size, default layer, CAM, weights availability."""
    from camcli.models import BUILTIN, DEFAULT_MODEL

    rows = [{"name": spec.name, "default": spec.name == DEFAULT_MODEL,
             "input_size": list(spec.input_size), "layer": spec.target_layer,
             "cam": spec.cam, "weights": spec.availability(), "description": spec.description}
            for spec in BUILTIN.values()]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    header = f"{'model':<20} {'input':<8} {'default layer':<18} {'cam':<4} weights"
    click.echo(header)
    for row in rows:
        name = row["name"] + (" *" if row["default"] else "")
        size = "x".join(map(str, row["input_size"]))
        click.echo(f"{name:<20} {size:<8} {row['layer']:<18} {'yes' if row['cam'] else 'no':<4} "
                   f"{row['weights']}")
    click.echo("\n* default. 'cam: no' models are explained with gradcam.")


@main.command(short_help="List the layers --layer accepts, with their shapes and the default.")
@click.argument("model", metavar="NAME|PATH")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json"]),
              help="table for people; json for scripts (stdout holds nothing else).")
@click.option("--unsafe-model-code", is_flag=True,
              help="Run Python code stored in a model file (Lambda layers); only for files "
                   "you trust.")
@verbosity_options
@translate_errors
def layers(model, fmt, unsafe_model_code):
    """List every address --layer accepts on MODEL (a built-in name or a .keras / .h5
    file): each layer with a 4-D output, or a 3-D token output with its prefix tokens and
    patch grid, '/'-separated through nested models and the layers a layer holds
    (keras-hub's transformer blocks, with their ':input'), its output shape, and the one
    explained by default. Built-ins are listed without their weights (nothing is
    downloaded).
    """
    from camcli.models import architecture, graph

    keras_model, registered = architecture(model, unsafe_model_code)
    found = graph.layers(keras_model, registered)
    if fmt == "json":
        click.echo(json.dumps([
            {"address": f.address, "shape": list(f.shape),
             "grid": [f.grid.height, f.grid.width] if f.grid else None,
             "prefix_tokens": f.grid.prefix if f.grid else None, "default": f.default}
            for f in found], indent=2))
        return
    width = max([len("address")] + [len(f.address) for f in found])
    click.echo(f"{'address':<{width}}  shape")
    for f in found:
        shape = "x".join("?" if d is None else str(d) for d in f.shape[1:])
        if len(f.shape) == 3:
            shape += (f"  tokens: {f.grid.prefix} + {f.grid.height}x{f.grid.width}" if f.grid
                      else "  tokens: give --token-grid / --prefix-tokens")
        click.echo(f"{f.address:<{width}}  {shape}{'  (default)' if f.default else ''}")


@main.command(short_help="Find the strategies a model uses in a run's saved maps (SpRAy).")
@click.argument("out_dir", type=Location(folder=True))
@click.option("--class", "classes", multiple=True, metavar="NAME",
              help="Audit this explained class (repeatable). [default: every class]")
@click.option("--clusters", default="auto", show_default=True, metavar="auto|K",
              help="How many clusters per class: the eigengap's choice, or K.")
@click.option("--max-clusters", default=8, show_default=True, type=click.IntRange(2, 50),
              help="Eigenvalues looked at for the eigengap.")
@click.option("--grid", default=16, show_default=True, type=click.IntRange(2, 256),
              help="Maps are resized to GRID x GRID before they are compared.")
@click.option("--min-images", default=10, show_default=True, type=click.IntRange(2),
              help="Classes with fewer saved maps are skipped.")
@click.option("--truth", default=None, type=Location(),
              help="camcli score's truth table: each cluster's share of map mass inside "
                   "the objects' boxes; mostly outside is flagged.")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json"]))
@click.option("--report/--no-report", "make_report", default=True, show_default=True,
              help="Also write OUT_DIR/index.html, the run's gallery with the audit on top "
                   "(see camcli report).")
@verbosity_options
@translate_errors
def audit(out_dir, classes, clusters, max_clusters, grid, min_images, truth, fmt,
          make_report):
    """Cluster each class's saved maps (batch --save-maps) by spectral relevance analysis
    (Lapuschkin et al. 2019): groups of images whose maps agree with each other and differ
    from the rest are the strategies the model uses; a group looking outside the objects
    (or always at one corner) is a shortcut. Writes OUT_DIR/audit.json and the run's
    report, OUT_DIR/index.html, with an Audit section."""
    from camcli import audit as auditing
    from camcli import storage

    if clusters != "auto" and not (clusters.isdigit() and int(clusters) >= 1):
        raise UsageFailure(f"--clusters: give 'auto' or a number of clusters, not {clusters!r}")
    results = auditing.audit(out_dir, list(classes) or None,
                             None if clusters == "auto" else int(clusters), grid,
                             max_clusters, min_images, truth)
    document = {"classes": [r.to_json() for r in results]}
    text = json.dumps(document, indent=2, ensure_ascii=False)
    storage.store_for(out_dir).write_atomic(storage.join(out_dir, "audit.json"),
                                            text.encode("utf-8"))
    click.echo(text if fmt == "json" else auditing.table(document["classes"]))
    if make_report:
        from camcli.report import build_report

        click.echo(f"camcli: audit shown in the report {build_report(out_dir).path}",
                   err=True)


@main.command()
@click.argument("out_dir", type=Location(folder=True))
@verbosity_options
@translate_errors
def report(out_dir):
    """Write OUT_DIR/index.html: a self-contained gallery of a batch run.

    Thumbnails of each photo and overlay, predicted and explained classes, metrics and
    errors; sort, filter and pages. Opens offline, from a file:// URL.
    """
    from camcli.report import build_report

    made = build_report(out_dir)
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
def score(manifests, truth, labels_file, fmt, min_pointing, min_loc, box_threshold):
    """Score a batch run (its manifest, or its output folder) against ground truth.

    Prints, per class and overall, classification top-1 and top-5, the pointing game (the
    map's peak within 15 px of a true box; Zhang et al. 2016), for runs with --boxes
    localisation accuracy (IoU >= 0.5; Zhou et al. 2016) and mean IoU, and for runs with
    --save-maps MaxBoxAccV2 (Choe et al. 2020) and the calibrated --box-threshold.
    --min-pointing and --min-loc make it exit 1 below a threshold, for CI.
    """
    from camcli.score import score as score_run
    from camcli.score import table

    scores = score_run(list(manifests), truth, labels_file, box_threshold)
    overall = scores.overall.rates()
    if min_loc is not None and overall["localisation"] is None:
        raise UsageFailure("--min-loc: nothing to localise (no boxes in the run, or no true "
                           "boxes of the classes it explained)")
    click.echo(json.dumps(scores.to_json(), indent=2) if fmt == "json" else table(scores))
    if scores.without_truth:
        click.echo(f"camcli: {scores.without_truth} of {scores.inputs} inputs have no row in "
                   f"{truth}", err=True)
    if scores.unresolved:
        click.echo(f"camcli: classes of {truth} the model's labels do not have: "
                   f"{', '.join(scores.unresolved[:10])}", err=True)
    failed = []
    for name, floor, value in (("pointing game", min_pointing, overall["pointing"]),
                               ("localisation accuracy", min_loc, overall["localisation"])):
        if floor is not None and (value is None or value < floor):
            shown = "n/a" if value is None else f"{value:.3f}"
            failed.append(f"{name} {shown} is below {floor:g}")
    if failed:
        click.echo("Error: " + "; ".join(failed), err=True)
        sys.exit(1)


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
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
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
    from camcli.train import train as fit

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
    report = fit(tree, model, settings, _ProgressBar(quiet=_verbosity() < 0),
                 layers=(layer,) if layer else (), command=_command_line())
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


@main.command()
@verbosity_options
def methods():
    """List the CAM methods: paper, cost per image, when to use each (Markdown)."""
    from camcli.methods import methods_table

    click.echo(methods_table())


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
                   "'all': both (see README).")
@click.option("--metric-steps", default=DEFAULT_METRIC_STEPS, show_default=True,
              type=click.IntRange(min=1),
              help="Deletion / insertion steps per image (each costs 2 forward passes).")
@click.option("--report", "make_report", is_flag=True,
              help="Also write OUT/index.html, the run's gallery (see camcli report).")
@click.option("--shard", default=None, metavar="K/N", callback=_parse_shard,
              help="Process only the K-th of N disjoint parts of the inputs (stable by "
                   "relative path), recorded in manifest.K-of-N.jsonl: N processes or array "
                   "jobs can share one tree and one --out.")
@click.option("--engine", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="local: this process. ray: Ray Data actors on this machine or a cluster "
                   "(pip install 'camcli[ray]'; see docs/SCALE.md).")
@click.option("--ray-address", default=default(RayOptions, "address"), metavar="ADDR",
              help="ray: join this running cluster. [default: start a local Ray]")
@click.option("--actors", default=None, metavar="N|MIN:MAX", callback=_parse_actors,
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
def batch(ctx, inputs, method, metrics, metric_steps, make_report, engine, **options):
    """Explain every image under INPUT... (folders, quoted globs, files) into --out.

    Writes OUT/<relative path>.jpg per input (extension replaced by .jpg) and one JSON line
    per picture in OUT/manifest.jsonl. Re-running the same command skips inputs already
    done. Exit code: 0 all written, 1 some inputs failed (see the manifest), 2 usage error.
    """
    from camcli.batch import run_batch
    from camcli.inputs import check_inputs

    ray_given = [name for name in ("ray_address", "actors", "cpus_per_actor", "gpus_per_actor")
                 if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)]
    if engine != "ray" and ray_given:
        raise UsageFailure(f"{', '.join(_flag(n) for n in ray_given)} "
                           f"appl{'ies' if len(ray_given) == 1 else 'y'} to --engine ray only")
    check_inputs(inputs)  # a missing path is reported before the model loads
    given = Given(options)
    run = given.build(BatchOptions, patterns=given.take("patterns") or None,
                      style=given.build(RenderStyle))
    model, explain = _requests(
        given, method, road=metrics in ("road", "all"),
        metric_steps=metric_steps if metrics in ("faithfulness", "all") else None)
    ray_options = given.build(RayOptions, address=given.take("ray_address"))
    given.close()
    if engine == "ray":
        from camcli.ray_engine import RayEngine  # says how to install Ray if it is missing

        engine = RayEngine(model, explain, run, ray_options, verbose=_verbosity() > 0)
        # The driver only plans: on the CPU, leaving GPUs to the actors.
        model = dataclasses.replace(model, device="cpu")
    else:
        engine = None
    session = _open_session(model, explain)
    with _graceful_ctrl_c() as stop:
        summary = run_batch(inputs, session, run, _ProgressBar(quiet=_verbosity() < 0),
                            stop_requested=stop.is_set, engine=engine)
    out_dir = run.out_dir
    lost = f", {summary.lost} not done (run again)" if summary.lost else ""
    click.echo(
        f"camcli: {summary.total} inputs: {summary.written} written, {summary.skipped} "
        f"already done, {summary.failed} failed{lost} in {summary.seconds:.1f} s "
        f"({summary.images_per_second:.1f} images/s). Overlays in {out_dir}/, "
        f"records in {_manifest_shown(summary.manifest)}"
        + (" (interrupted)" if summary.interrupted else ""),
        err=True,
    )
    if summary.metrics:
        _say_metrics(summary.metrics)
    if make_report:
        from camcli.report import build_report

        click.echo(f"camcli: report in {build_report(out_dir, run.workers).path}", err=True)
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(1 if summary.failed or summary.lost else 0)


def _command_line() -> str:
    """The current command as typed, rebuilt from what was given on the command line."""
    import shlex

    context = click.get_current_context()
    words = ["camcli", context.info_name]
    for param in context.command.params:
        if not param.expose_value or \
                context.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue  # (-q / -v are added below)
        value = context.params.get(param.name)
        if isinstance(param, click.Argument):
            words += list(value) if isinstance(value, tuple) else [str(value)]
        elif param.is_flag:
            words.append(param.opts[-1] if len(param.opts[-1]) > 2 else param.opts[0])
        else:
            for one in value if param.multiple else [value]:
                words += [max(param.opts, key=len), str(one)]
    verbosity = _verbosity()
    words += ["-q"] if verbosity < 0 else ["-v"] if verbosity > 0 else []
    return shlex.join(words)


def _manifest_shown(path: str) -> str:
    """Where the records are: the manifest file, or in an object store its parts' folder
    (`camcli.storage.PartsAppender`)."""
    from camcli.storage import is_url

    return path.removesuffix(".jsonl") + "/" if is_url(path) else path


def _say_metrics(means: dict) -> None:
    """The run's mean metrics, on stderr."""
    said = []
    if "deletion_auc" in means:
        said.append(f"deletion AUC {means['deletion_auc']:.3f} (lower is better), insertion "
                    f"AUC {means['insertion_auc']:.3f} (higher is better), average drop "
                    f"{means['average_drop']:.1f}% (lower is better), increase in confidence "
                    f"{means['increase']:.1f}% (higher is better)")
    if "road_combined" in means:
        said.append(f"ROAD MoRF {means['road_morf']:+.4f} (lower is better), LeRF "
                    f"{means['road_lerf']:+.4f} (higher is better), combined "
                    f"{means['road_combined']:+.4f} (higher is better)")
    click.echo(f"camcli: metrics over {means['images']} images: {'; '.join(said)}", err=True)


@contextlib.contextmanager
def _graceful_ctrl_c():
    """First Ctrl-C: finish the images in flight, record them, stop. Second: abort."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        click.echo("\ncamcli: stopping after the images in flight (Ctrl-C again to abort)",
                   err=True)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. embedded): plain KeyboardInterrupt
        yield stop
        return
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


class _ProgressBar:
    """tqdm on stderr: count, ETA and images/s; errors printed above the bar."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def start(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="img", file=sys.stderr, disable=self.quiet,
                        dynamic_ncols=True, desc="camcli")

    def advance(self, path: str | None = None, error: str | None = None) -> None:
        if error:
            message = f"Error: {path}: {error}"
            if self.quiet:
                click.echo(message, err=True)
            else:
                self.bar.write(message, file=sys.stderr)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


if __name__ == "__main__":  # pragma: no cover
    main()

"""Option bundles, defined once and stacked on every command that takes them, and the
parameter types and parsers they use. Defaults come from the request objects in
`camcli.options`, never from here.
"""

from __future__ import annotations

import re

import click

from camcli.cli.app import UsageFailure, verbosity_options
from camcli.compute.backend import PRECISIONS
from camcli.compute.methods import HEAD_FUSIONS, METHODS
from camcli.compute.methods.base import FUSE_MODES, SMOOTHINGS
from camcli.compute.methods.eigencam import KERNELS
from camcli.compute.models.preprocess import PREPROCESSORS
from camcli.options import (
    AUTO,
    DEFAULT_BATCH_SIZE,
    TRANSFORMER_METHOD,
    TRANSFORMER_OPTIONS,
    ExplainRequest,
    ModelRequest,
    RenderStyle,
    as_flags,
    default,
)

# The registries feed the choices (they import NumPy, ~80 ms; never TensorFlow or OpenCV).
METHOD_NAMES = (AUTO, *METHODS)
PREPROCESS_NAMES = tuple(PREPROCESSORS)
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
        from camcli.io.locations import is_url

        if is_url(str(value)):
            return str(value)
        return self._local.convert(value, param, ctx)


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
        click.option("--token-grid", default=None, metavar="HxW", callback=parse_grid,
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
                     metavar="NAME", callback=check_colormap,
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
                     help=f"The method (see 'camcli methods'). {AUTO}: "
                          f"{TRANSFORMER_METHOD} ({as_flags(TRANSFORMER_OPTIONS)}) on a vision "
                          "transformer whose blocks "
                          "attend with MultiHeadAttention (the best worst-task pointing "
                          "of the bench, docs/guides/transformers.md), else gradcam; with "
                          "--layer, gradcam."),
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
        click.option("--head-fusion", type=click.Choice(HEAD_FUSIONS), show_default=True,
                     default=default(ExplainRequest, "head_fusion"),
                     help="rollout: how each block's attention heads are fused."),
        click.option("--discard-ratio", show_default=True, metavar="F",
                     type=click.FloatRange(0.0, 1.0, max_open=True),
                     default=default(ExplainRequest, "discard_ratio"),
                     help="rollout: drop the lowest F of each fused attention matrix (never "
                          "the read-out token's own entry)."),
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


def parse_shard(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise click.BadParameter(f"{value!r} is not K/N with 1 <= K <= N (e.g. 3/8)")
    return int(match.group(1)), int(match.group(2))


def parse_grid(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
    if not match or not int(match.group(1)) or not int(match.group(2)):
        raise click.BadParameter(f"{value!r} is not HxW with H, W >= 1 (e.g. 14x14)")
    return int(match.group(1)), int(match.group(2))


def parse_clusters(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    if value == "auto":
        return None
    if not (value.isdigit() and int(value) >= 1):
        raise UsageFailure(f"--clusters: give 'auto' or a number of clusters, not {value!r}")
    return int(value)


def parse_actors(ctx: click.Context, param: click.Parameter, value: str | None):
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


def check_colormap(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from camcli.run.render import COLORMAPS

    name = value.lower()
    if name not in COLORMAPS:
        raise click.BadParameter(f"{value!r} is not an OpenCV colour map; choose from "
                                 f"{', '.join(sorted(COLORMAPS))}")
    return name

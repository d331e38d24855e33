"""What a run is asked to do, one frozen object per concern. Their field defaults are *the*
defaults: the CLI's options, the library's signatures (`camcli.open`) and the manual all
read them here.

* `ModelRequest` — which model, loaded how and run where (and in what precision).
* `ExplainRequest` — what to explain: method, target layer, class, top-k maps, metrics.
* `RenderStyle` — how a map is drawn over the photo.
* `BatchOptions` — how ``camcli batch`` walks, writes and resumes.
* `RayOptions` — how ``camcli batch --engine ray`` uses a Ray cluster.
* `TrainOptions` — how ``camcli train`` fits a head.
* `ScoreOptions` — what ``camcli score`` compares a run with, and its CI gates.
* `AuditOptions` — how ``camcli audit`` clusters a run's saved maps.

and the words every layer shares about a request: `TARGET_KINDS`, `CLASS_SOURCES`.
This module is the bottom of the package: it imports nothing of camcli's (and no
TensorFlow), so every layer, the records' included, may read it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

#: The built-in model used when none is named: it works offline
#: (`camcli.compute.models.registry`).
DEFAULT_MODEL = "efficientnet-lite0"

#: Images per forward pass, for every command.
DEFAULT_BATCH_SIZE = 32

#: Deletion / insertion steps of the faithfulness metrics (`camcli.analysis.metrics`), when
#: asked for.
DEFAULT_METRIC_STEPS = 20

#: A box keeps the map's pixels at or above this fraction of its maximum
#: (`camcli.analysis.localise`).
#: Chosen by measurement (``python bench/boxes.py``; docs/PERFORMANCE.md).
DEFAULT_BOX_THRESHOLD = 0.5

#: Score-CAM's masked images per forward pass.
DEFAULT_SCORECAM_BATCH = 64

#: Finer-CAM: how much of the similar classes' logits is subtracted, and how many of them.
FINER_ALPHA, FINER_CLASSES = 1.0, 3

#: ``--method``'s default: the method measured best for the model's family, resolved when
#: the model is loaded (`camcli.compute.explainer.chosen_method`).
AUTO = "auto"
#: The method ``auto`` gives a vision transformer whose blocks attend with
#: MultiHeadAttention: the best worst-task pointing of ``bench/transformers.py``
#: (docs/guides/transformers.md); any other model gets Grad-CAM.
TRANSFORMER_METHOD = "rollout"
#: ... with these of its options, where the request leaves them at their defaults: the
#: bench's best worst task (89%; vit-explain's defaults, mean and 0, reach 79%).
TRANSFORMER_OPTIONS: tuple[tuple[str, object], ...] = (("head_fusion", "max"),
                                                        ("discard_ratio", 0.5))


def as_flags(pairs) -> str:
    """Request fields and values as the command line says them: ``(("discard_ratio",
    0.5),)`` is ``--discard-ratio 0.5``."""
    return " ".join(f"--{name.replace('_', '-')} {value}" for name, value in pairs)


#: Attention rollout: how a block's heads are fused, and the share of each fused matrix's
#: lowest entries dropped (vit-explain's defaults).
HEAD_FUSION, DISCARD_RATIO = "mean", 0.0

#: The kinds of target a record can answer (`camcli.compute.targets` plans them): an
#: image's top class, its top K classes, a class asked for, or both of the last two.
TARGET_KINDS = ("top1", "top-k", "class", "top-k+class")

#: Where an asked class came from: ``--class``, the input's folder, or a table file.
CLASS_SOURCES = ("option", "folder", "file")


@dataclass(frozen=True)
class ModelRequest:
    """Which model, and how to run it.

    Attributes:
        model: a built-in name (``camcli models``) or a ``.keras`` / ``.h5`` file.
        weights: for built-ins: ``imagenet``, ``none`` (random) or a Keras weights file.
        labels_file: class names, one per line (None: ImageNet names or ``class_<i>``).
        preprocess: preprocessing mode (None: the model's own; ``none`` for files).
        device: ``auto|cpu|gpu|gpu:N`` (None: ``$CAMCLI_DEVICE``, else auto).
        precision: ``fp32`` (the model's own numbers), or opt-in ``auto|bf16|fp16``.
        unsafe_model_code: load a model file with Keras' ``safe_mode=False``.
    """

    model: str = DEFAULT_MODEL
    weights: str = "imagenet"
    labels_file: str | None = None
    preprocess: str | None = None
    device: str | None = None
    precision: str = "fp32"
    unsafe_model_code: bool = False


@dataclass(frozen=True)
class ExplainRequest:
    """What to explain (``method=None``: predict only, no map).

    Attributes:
        method: a key of `camcli.compute.methods.METHODS`; `AUTO`, the measured default
            of the model's family (`TRANSFORMER_METHOD` on a vision transformer with no
            ``layers`` asked, else Grad-CAM); or None.
        layers: target layer names or nested paths (none: the model's registered layer,
            else the last spatial feature map); several are fused into one map.
        fuse: how several layers' maps become one: ``mean`` or ``max``.
        class_spec: the class to explain for every image (index, WordNet id or name);
            None explains each image's top-1 class.
        class_from: a class per image instead: ``folder`` (each input's parent folder
            names it) or a table file (`camcli.io.tables`).
        skip_unknown_classes: with ``class_from``, give inputs whose class the model does
            not have an error record instead of refusing the run.
        top_k_maps: explain each image's K most probable classes, one map each.
        max_maps: Score-CAM, Ablation-CAM: keep (ablate) the K channels of highest
            variance (None: all).
        scorecam_batch: Score-CAM: masked images per forward pass.
        smooth: ``aug`` (test-time augmentation) or ``eigen`` (first principal component);
            None: no smoothing (`camcli.compute.methods.base`).
        finer_alpha: Finer-CAM: how much the similar classes' logits are subtracted.
        finer_classes: Finer-CAM: how many similar classes are compared.
        kernel: KPCA-CAM: the kernel of its kernel PCA.
        seed: RandomCAM: the seed of its random weights.
        head_fusion: attention rollout: how a block's heads are fused (``mean``, ``max``,
            ``min``).
        discard_ratio: attention rollout: the share of each fused attention matrix's
            lowest entries dropped (never the read-out token's own), in [0, 1).
        metric_steps: measure each map's faithfulness with this many deletion / insertion
            steps (None: no such metrics).
        road: measure each map's ROAD scores (`camcli.analysis.metrics.road`).
        boxes: find each map's box (`camcli.analysis.localise.box`), record and draw it.
        box_threshold: the fraction of the map's maximum a box keeps.
        token_grid: for a token layer (a vision transformer's), its patch grid
            ``(height, width)`` when the token count does not say it
            (`camcli.compute.models.tokens`).
        prefix_tokens: for a token layer, the tokens before the patches (class,
            distillation, registers) when the token count does not say it.
    """

    method: str | None = AUTO
    layers: tuple[str, ...] = ()
    fuse: str = "mean"
    class_spec: str | int | None = None
    class_from: str | None = None
    skip_unknown_classes: bool = False
    top_k_maps: int | None = None
    max_maps: int | None = None
    scorecam_batch: int = DEFAULT_SCORECAM_BATCH
    smooth: str | None = None
    finer_alpha: float = FINER_ALPHA
    finer_classes: int = FINER_CLASSES
    kernel: str = "sigmoid"
    seed: int = 0
    head_fusion: str = HEAD_FUSION
    discard_ratio: float = DISCARD_RATIO
    metric_steps: int | None = None
    road: bool = False
    boxes: bool = False
    box_threshold: float = DEFAULT_BOX_THRESHOLD
    token_grid: tuple[int, int] | None = None
    prefix_tokens: int | None = None


@dataclass(frozen=True)
class RenderStyle:
    """How a map is drawn: ``overlay = alpha * coloured map + (1 - alpha) * photo``.

    Attributes:
        alpha: the heatmap's weight in the blend, in [0, 1].
        colormap: an OpenCV colour map name (``jet``, ``turbo``, ``viridis``...).
        quality: JPEG quality, 1-100.
        panel: write original | heatmap | overlay under a caption instead of the overlay.
    """

    alpha: float = 0.4
    colormap: str = "jet"
    quality: int = 90
    panel: bool = False


@dataclass(frozen=True)
class BatchOptions:
    """How ``camcli batch`` walks its inputs, writes and resumes.

    Attributes:
        out_dir: the output folder (mirrors the input tree; holds the manifest).
        patterns: file-name globs taken when walking folders (None: image extensions).
        save_maps: also write each low-resolution map as ``.npy``.
        overwrite: redo inputs the manifest records as done.
        top_k: classes listed in each record's ``top``.
        batch_size: images per forward pass.
        workers: threads decoding ahead of the model and writing behind it.
        shard: ``(K, N)``: process only the K-th of N disjoint parts of the inputs.
        style: how the pictures are drawn.
        report: also write the run's report (``out_dir/index.html``) after it.
    """

    out_dir: str
    patterns: tuple[str, ...] | None = None
    save_maps: bool = False
    overwrite: bool = False
    top_k: int = 5
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = 2
    shard: tuple[int, int] | None = None
    style: RenderStyle = field(default_factory=RenderStyle)
    report: bool = False


@dataclass(frozen=True)
class RayOptions:
    """How ``batch --engine ray`` schedules the work on Ray Data (`camcli.run.ray_engine`).

    Attributes:
        address: a running cluster to join (``ray start --head``, KubeRay); None starts a
            local Ray on this machine (or joins the one ``ray.init()`` would find).
        actors: ``(min, max)`` actors in the pool (equal: a fixed pool); None: one per GPU
            share on a GPU cluster, else one per node.
        cpus_per_actor: CPUs each actor reserves. A fraction leaves Ray Data's own tasks
            room on small machines (a whole CPU per actor starves them on 2 cores).
        gpus_per_actor: GPUs each actor reserves (0.25: four actors share a GPU); None: 1
            on a cluster with GPUs, else 0.
        retries: how often a batch whose actor died is retried on a new actor before its
            inputs are left unrecorded for the next run.
        wave: inputs handed to Ray Data at a time (bounds the driver's memory).
    """

    address: str | None = None
    actors: tuple[int, int] | None = None
    cpus_per_actor: float = 0.5
    gpus_per_actor: float | None = None
    retries: int = 2
    wave: int = 100_000


@dataclass(frozen=True)
class TrainOptions:
    """How ``camcli train`` fits the head.

    Attributes:
        output: the ``.keras`` file to write.
        val_split: the fraction of each class held out for validation (stratified).
        epochs: the most epochs; early stopping on the validation loss ends sooner.
        patience: epochs without a better validation loss before stopping.
        seed: the split's and the training's seed: same seed, same weights.
        augment: also train on each training image flipped left-right (its features are
            computed too: twice the backbone's work for the training images).
        learning_rate: Adam's.
        overwrite: replace ``output`` if it exists.
        patterns: file names taken when walking (None: image extensions).
        batch_size: images per forward pass of the backbone.
        workers: decoding threads.
    """

    output: str
    val_split: float = 0.1
    epochs: int = 100
    patience: int = 5
    seed: int = 0
    augment: bool = False
    learning_rate: float = 1e-2
    overwrite: bool = False
    patterns: tuple[str, ...] | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = 2


@dataclass(frozen=True)
class ScoreOptions:
    """What ``camcli score`` compares a run with, and when it fails a CI job.

    Attributes:
        truth: the ground-truth table (`camcli.io.tables`: CSV, JSON lines, COCO).
        labels_file: the model's class names (None: ImageNet's, or the names the records
            show).
        box_threshold: localise with boxes derived again from the saved maps at this
            fraction of each map's maximum (None: the records' boxes).
        min_pointing: fail below this pointing-game rate (None: no gate).
        min_loc: fail below this localisation accuracy (None: no gate).
    """

    truth: str
    labels_file: str | None = None
    box_threshold: float | None = None
    min_pointing: float | None = None
    min_loc: float | None = None


@dataclass(frozen=True)
class AuditOptions:
    """How ``camcli audit`` clusters a run's saved maps (`camcli.analysis.audit`).

    Attributes:
        classes: the explained classes to audit (empty: every class).
        clusters: clusters per class (None: the eigengap chooses).
        max_clusters: eigenvalues looked at for the eigengap.
        grid: maps are resized to ``grid`` x ``grid`` before they are compared.
        min_images: classes with fewer saved maps are skipped.
        truth: a table of boxes (`ScoreOptions.truth`'s kind): each cluster's share of
            map mass inside the objects' boxes.
        make_report: also (re)write the run's report, with the audit in it.
    """

    classes: tuple[str, ...] = ()
    clusters: int | None = None
    max_clusters: int = 8
    grid: int = 16
    min_images: int = 10
    truth: str | None = None
    make_report: bool = True


@dataclass(frozen=True)
class EvaluateOptions:
    """How ``camcli evaluate`` scores the methods on a model (`camcli.run.evaluate`).

    Attributes:
        out_dir: where ``evaluate.json`` and ``evaluate.html`` go (a folder or a URL).
        methods: the methods to score; empty: every method that applies to the model and
            costs a few passes (`EVALUATE_SKIPPED` only when named); ``("all",)``: every
            method that applies.
        sample: how many inputs, drawn with ``seed``; all of them when there are fewer.
        truth: a table of boxes (`ScoreOptions.truth`'s kind): the pointing game and
            MaxBoxAccV2 of each method.
        mprt_steps: at most this many steps of the randomisation cascade, spread evenly
            (None: every step).
        noise_copies: Max-Sensitivity's noisy copies of each image.
        noise_range: their uniform noise, as a fraction of the pixel range (Quantus' 0.2).
        seed: the seed of the sample, the randomised weights, the random classes and the
            noise.
        patterns: file names taken when walking folders (None: image extensions).
        batch_size: images per forward pass.
        workers: decoding threads.
    """

    out_dir: str
    methods: tuple[str, ...] = ()
    sample: int = 64
    truth: str | None = None
    mprt_steps: int | None = None
    noise_copies: int = 10
    noise_range: float = 0.2
    seed: int = 0
    patterns: tuple[str, ...] | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = 2


#: The methods ``camcli evaluate`` leaves out unless named (or ``--methods all``): a pass
#: per channel or per masked image makes them hours on a sample.
EVALUATE_SKIPPED = ("scorecam", "ablationcam")


def default(cls: type, name: str):
    """The default of field ``name`` of one of the classes above (for the CLI's options)."""
    for item in dataclasses.fields(cls):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                return item.default
            break
    raise KeyError(f"{cls.__name__}.{name} has no plain default")


class Given:
    """A command's option values, handed out by name to the objects they configure.

    Each value goes to the field of the same name (`build`) or is taken by name (`take`);
    `close` refuses the values nobody took. So a renamed field, or a renamed option, fails
    at once instead of leaving a field at its default without a word.

    Args:
        values: the option values, by parameter name (click's ``**kwargs``).
    """

    def __init__(self, values: dict):
        self._values = dict(values)

    def build(self, cls: type, **more):
        """``cls`` from the values named like its fields, and ``more``."""
        names = [item.name for item in dataclasses.fields(cls)]
        taken = {name: self._values.pop(name) for name in names if name in self._values}
        return cls(**taken, **more)

    def take(self, name: str):
        """The value of ``name``, which no object field takes."""
        return self._values.pop(name)

    def close(self) -> None:
        """Raises:
            TypeError: some values were taken by nothing (a programming error).
        """
        if self._values:
            raise TypeError(f"options that configure nothing: {', '.join(sorted(self._values))}")

"""Lazy TensorFlow import and device selection.

TensorFlow takes seconds to import, so nothing imports it at module level except the
modules that run a model; `camcli --help` stays instant.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys

from camcli.errors import DeviceError

log = logging.getLogger("camcli")

#: Environment variable giving the default for --device.
DEVICE_ENV = "CAMCLI_DEVICE"


def tensorflow():
    """Import TensorFlow quietly (its C++ start-up chatter goes unless -v asked for it)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0":
        import tensorflow as tf

        _quiet_known_warnings()
        return tf
    # Some CUDA probes print to file descriptor 2 before TensorFlow's log level applies
    # ("Could not find cuda drivers ..."); silence the descriptor during the import only.
    with quiet_stderr():
        import tensorflow as tf
    _quiet_known_warnings()
    return tf


def _quiet_known_warnings() -> None:
    """Drop warnings that say nothing to a camcli user on every run."""
    import warnings

    # keras-hub's Swin hands its window attention a mask the layer ignores, by design.
    warnings.filterwarnings("ignore", category=UserWarning,
                            message=r"Layer '.*' \(of type WindowAttention\) was passed "
                                    "an input with a mask")
    # TensorFlow counts the traces of one Python function over all its tf.functions: the
    # methods that share BaseCAM.explain_step, each traced once (camcli evaluate builds a
    # dozen), read to it as "retracing".
    logging.getLogger("tensorflow").addFilter(_NotRetracing())


class _NotRetracing(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def quiet_stderr():
    """Send file descriptor 2 to /dev/null meanwhile: for C++ libraries that log there
    before their log level applies (TensorFlow's import, Ray's start)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


_DEVICE_RE = re.compile(r"^(auto|cpu|gpu)(?::(\d+))?$")


def parse_device(spec: str) -> tuple[str, int | None]:
    """Split ``auto|cpu|gpu|gpu:N`` into kind and index; raises DeviceError if malformed."""
    match = _DEVICE_RE.match(spec.strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "gpu"):
        raise DeviceError(f"invalid device {spec!r}: use auto, cpu, gpu or gpu:N")
    index = int(match.group(2)) if match.group(2) is not None else None
    return match.group(1), index


def select_device(spec: str | None = None) -> str:
    """Choose the device and return its TensorFlow name (``/CPU:0`` or ``/GPU:N``).

    ``auto`` takes the first GPU if TensorFlow sees one, else the CPU. Asking for a GPU
    that is not there is an error, never a silent CPU run. Unused GPUs are hidden from
    TensorFlow when it has not started yet (so it does not reserve their memory); callers
    place the work with ``tf.device(name)`` either way.

    Raises:
        DeviceError: malformed spec, or no such GPU.
    """
    kind, index = parse_device(spec or os.environ.get(DEVICE_ENV) or "auto")
    tf = tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "cpu" or (kind == "auto" and not gpus):
        if gpus:
            _hide_other_devices(tf, [])
        log.info("device: CPU")
        return "/CPU:0"
    if not gpus:
        raise DeviceError(
            f"device {spec or os.environ.get(DEVICE_ENV)!r} asked for a GPU, but TensorFlow "
            "sees none (is the 'gpu' extra installed: pip install 'camcli[gpu]'?)"
        )
    index = index or 0
    if index >= len(gpus):
        raise DeviceError(f"no GPU {index}: TensorFlow sees {len(gpus)} GPU(s) (0-{len(gpus) - 1})")
    log.info("device: GPU %d (%s)", index, gpus[index].name)
    try:  # take GPU memory as needed, so processes (Ray actors) can share one GPU
        tf.config.experimental.set_memory_growth(gpus[index], True)
    except RuntimeError:  # TensorFlow already started on it
        pass
    if _hide_other_devices(tf, [gpus[index]]):
        return "/GPU:0"  # the only visible GPU is now number 0
    return f"/GPU:{index}"


def _hide_other_devices(tf, keep: list) -> bool:
    try:
        tf.config.set_visible_devices(keep, "GPU")
    except RuntimeError:  # TensorFlow already started: devices can no longer be hidden
        return False
    return True


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), per /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> ``fp16`` on a GPU, ``bf16`` on a CPU with native bfloat16, else ``fp32``.

    Raises:
        DeviceError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if "GPU" in device:
        return "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def apply_precision(model, precision: str) -> None:
    """Set every layer's compute dtype (nested models included); variables stay float32.

    Must run before the model is split (`camcli.compute.models.graph.build`). Maps are computed in
    float32 whatever the model computes in.
    """
    import keras

    policy = _POLICIES[precision]
    if precision == "fp32" and model.dtype_policy.name == "float32":
        return
    stack = [model]
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.InputLayer):
            continue
        layer.dtype_policy = policy
        stack.extend(getattr(layer, "layers", []))
    log.info("precision: %s (%s)", precision, policy)

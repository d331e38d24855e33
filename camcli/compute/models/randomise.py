"""Model parameter randomisation, cascading from the top (Adebayo et al., "Sanity Checks
for Saliency Maps", NeurIPS 2018; Quantus ``MPRT`` with ``layer_order="top_down"``).

`cascade` cuts a model into its natural groups of weights, from the classifier down:

* keras-applications' blocks, by their layers' names (``block5_conv1``, ``block6a_…``,
  ``conv4_block2_…``);
* a transformer's blocks (the repeated layers `addresses` finds), each with every weight
  under it;
* else each layer with weights is a group of its own.

What comes after the last block is one group, ``classifier`` (the head: ``top_conv`` and
``predictions``, a transformer's final norm and dense layer); what comes before the first
is one group, ``stem`` (a stem convolution, a patch embedding).

`Randomiser` re-initialises the groups in place, cumulatively: step ``k`` gives every
group down to ``k`` the values of a fresh copy of the model built from its own config
under a fixed seed (each weight from its layer's own initialiser, as PyTorch's
``reset_parameters`` in Quantus), and it puts every original value back on leaving. The
model's weights are its variables: a traced explanation step sees the new values without
being traced again.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from camcli.compute.models.addresses import _blocks
from camcli.compute.models.replay import replayed
from camcli.errors import CamcliError

#: keras-applications' block names: ``block5_conv1`` (VGG), ``block6a_expand_conv``
#: (EfficientNet, MobileNetV2's ``block_6_…``), ``conv4_block2_1_conv`` (ResNet,
#: DenseNet), ``mixed7`` (Inception).
BLOCK_NAME = re.compile(r"^(block_?\d+[a-z]?|conv\d+_block\d+|mixed\d+)(_|$)")

CLASSIFIER, STEM = "classifier", "stem"


@dataclass(frozen=True)
class Group:
    """Weights randomised together: a block, the classifier, the stem, or one layer.

    Attributes:
        name: the block's name or address, ``classifier``, ``stem``, or the layer's
            address.
        variables: the model's variables in the group.
    """

    name: str
    variables: tuple


def cascade(model) -> list[Group]:
    """``model``'s groups of weights, from the top (the classifier) down.

    Raises:
        LayerError: a model camcli cannot traverse.
        CamcliError: the model has no weights.
    """
    _, calls, _ = replayed(model)
    blocks = _blocks(calls)
    units: list[tuple[str | None, str, list]] = []  # (block key, address, variables)
    taken: set[int] = set()

    def add(key, address, variables):
        fresh = [v for v in variables if id(v) not in taken]
        taken.update(id(v) for v in fresh)
        if fresh:
            units.append((key, address, fresh))

    for call in calls:
        inner = [b for b in blocks if b.path.startswith(call.path + "/")]
        block = next((b for b in blocks if call.path == b.path
                      or call.path.startswith(b.path + "/")), None)
        if block is not None:
            add(block.path, block.path, _own(block.layer))
        elif inner or not call.intercepted:
            # A layer holding blocks gives them their own groups as they are called; its
            # other weights (a final norm) count where its intercepted sublayers say.
            if not inner:
                match = BLOCK_NAME.match(call.path.rsplit("/", 1)[-1])
                add(match.group(1) if match else None, call.path, _own(call.layer))
        else:
            add(None, call.path, _own(call.layer))
    for variable in model.weights:  # weights no call showed (rare): with the top
        if id(variable) not in taken:
            add(None, "unused", [variable])
    if not units:
        raise CamcliError(f"model {model.name!r} has no weights to randomise")
    keyed = [n for n, (key, _, _) in enumerate(units) if key is not None]
    if not keyed:
        groups = [Group(address, tuple(v)) for _, address, v in units]
    else:
        first, last = keyed[0], keyed[-1]
        groups = []
        if first > 0:
            groups.append(Group(STEM, tuple(v for _, _, vs in units[:first] for v in vs)))
        for key, address, variables in units[first:last + 1]:
            name = key if key is not None else address
            if groups and groups[-1].name == name:
                groups[-1] = Group(name, groups[-1].variables + tuple(variables))
            else:
                groups.append(Group(name, tuple(variables)))
        if last + 1 < len(units):
            groups.append(Group(CLASSIFIER, tuple(v for _, _, vs in units[last + 1:]
                                                  for v in vs)))
    return groups[::-1]


def _own(layer) -> list:
    """A leaf layer's variables (all of them: trainable and not, a batch normalisation's
    moving statistics too)."""
    return list(getattr(layer, "weights", None) or [])


def spread(count: int, steps: int | None) -> list[int]:
    """Which of ``count`` cascade steps to evaluate when at most ``steps`` are asked:
    evenly spread, the first (the classifier) and the last (the whole model) always
    among them; all of them when ``steps`` is None or at least ``count``."""
    if steps is None or steps >= count:
        return list(range(count))
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps == 1:
        return [count - 1]
    return sorted({int(round(i)) for i in np.linspace(0, count - 1, steps)})


class Randomiser:
    """A model whose groups (`cascade`) are re-initialised from the top, in place.

    Use it as a context manager: on leaving, every variable it changed gets its original
    value back, whatever happened.

    Args:
        model: the Keras model (the very one the explainers run).
        groups: its `cascade`.
        seed: the seed of the fresh copy's initialisers.

    Raises:
        CamcliError: the model cannot be rebuilt from its config (a custom layer without
            ``get_config``), or the copy's weights do not match.
    """

    def __init__(self, model, groups: list[Group], seed: int = 0):
        self.model = model
        self.groups = groups
        self.seed = seed
        self._fresh: dict[int, np.ndarray] | None = None
        self._saved: dict[int, tuple] = {}
        self.done = 0

    def _fresh_values(self) -> dict[int, np.ndarray]:
        import keras

        state = np.random.get_state()
        try:
            keras.utils.set_random_seed(self.seed)
            copy = type(self.model).from_config(self.model.get_config())
        except Exception as exc:
            raise CamcliError(
                f"camcli evaluate re-initialises the model from a fresh copy built from its "
                f"config, and model {self.model.name!r} cannot be rebuilt that way "
                f"({type(exc).__name__}: {exc})") from exc
        finally:
            np.random.set_state(state)
        ours, theirs = self.model.weights, copy.weights
        if len(ours) != len(theirs) or any(tuple(a.shape) != tuple(b.shape)
                                           for a, b in zip(ours, theirs, strict=True)):
            raise CamcliError(f"the fresh copy of model {self.model.name!r} built from its "
                              "config has other weights than the model")
        return {id(a): keras.ops.convert_to_numpy(b) for a, b in
                zip(ours, theirs, strict=True)}

    def through(self, step: int) -> None:
        """Randomise every group down to ``step`` (0: the classifier), in order."""
        if self._fresh is None:
            self._fresh = self._fresh_values()
        for group in self.groups[self.done:step + 1]:
            for variable in group.variables:
                key = id(variable)
                if key not in self._saved:
                    self._saved[key] = (variable, np.array(variable.numpy()))
                variable.assign(self._fresh[key].astype(variable.dtype))
        self.done = max(self.done, step + 1)

    def restore(self) -> None:
        for variable, value in self._saved.values():
            variable.assign(value)
        self._saved.clear()
        self.done = 0

    @contextlib.contextmanager
    def applied(self) -> Iterator[Randomiser]:
        try:
            yield self
        finally:
            self.restore()

"""Finding the images to process: files, folders (walked lazily) and quoted globs.

Every input gets a *relative path* under one common base folder, so a batch run can mirror
the input tree in its output folder. For a single folder the base is the folder itself.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from camcli.errors import InputNotFound, UsageProblem
from camcli.io import locations
from camcli.io.images import IMAGE_EXTENSIONS
from camcli.io.storage import Storage, resolved

_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class InputItem:
    """One image to process.

    Attributes:
        path: the path as found (the user's spelling joined with the walked names).
        relative: its path relative to the run's base folder, with '/' separators.
        requested_class: the class asked for this input alone (--class-from), or None.
        problem: why the input cannot be done as asked (a class the model does not
            have): it becomes the input's error record, without running the model.
        pixels: an image given in memory (the Python API: a PIL image or an array) as
            RGB uint8 ``(height, width, 3)``, not read from ``path`` (then a name only).
    """

    path: str
    relative: str
    requested_class: int | None = None
    problem: str | None = None
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)


def _is_glob(arg: str, storage: Storage) -> bool:
    return any(c in arg for c in _GLOB_CHARS) and not storage.store(arg).exists(arg)


def _glob_root(pattern: str) -> str:
    separator = "/" if locations.is_url(pattern) else os.sep
    parts = []
    for part in pattern.split(separator):
        if any(c in part for c in _GLOB_CHARS):
            break
        parts.append(part)
    root = separator.join(parts)
    return root or os.curdir


def check_inputs(args: Sequence[str], storage: Storage | None = None) -> None:
    """Raise `InputNotFound` for the first argument that names nothing."""
    storage = resolved(storage)
    if not args:
        raise InputNotFound("no input given")
    for arg in args:
        if _is_glob(arg, storage):
            if not storage.store(arg).glob(arg):
                raise InputNotFound(f"no file matches {arg!r}")
        elif not storage.store(arg).exists(arg):
            raise InputNotFound(f"{arg}: no such file or directory")


def base_folder(args: Sequence[str], storage: Storage | None = None) -> str:
    """The folder all inputs are relative to (absolute path)."""
    storage = resolved(storage)
    roots = []
    for arg in args:
        if _is_glob(arg, storage):
            roots.append(locations.absolute(_glob_root(arg)))
        elif storage.store(arg).isdir(arg):
            roots.append(locations.absolute(arg))
        else:
            roots.append(locations.dirname(locations.absolute(arg)))
    if not roots:
        return os.path.abspath(os.curdir)
    kinds = {locations.scheme(root) for root in roots}
    if len(kinds) > 1:
        raise UsageProblem("the inputs mix local paths and URLs (or several kinds of URL): "
                           "give the inputs of one run from one store")
    kind = kinds.pop()
    if kind is None:
        return os.path.commonpath(roots)
    common = posixpath.commonpath([root.split("://", 1)[1] for root in roots])
    return f"{kind}://{common}"


class _NameFilter:
    def __init__(self, patterns: Sequence[str] | None):
        self.patterns = [p.lower() for p in patterns] if patterns else None

    def __call__(self, name: str) -> bool:
        lowered = name.lower()
        if self.patterns is None:
            return lowered.endswith(IMAGE_EXTENSIONS)
        return any(fnmatch.fnmatchcase(lowered, p) for p in self.patterns)


def discover(args: Sequence[str], patterns: Sequence[str] | None = None,
             exclude: str | None = None, storage: Storage | None = None
             ) -> Iterator[InputItem]:
    """Yield the images named by ``args`` lazily, in a deterministic (sorted) order.

    Files named explicitly are always taken; files found by walking a folder or expanding
    a glob are kept when their name matches one of ``patterns`` (shell-style, compared
    case-insensitively; default: common image extensions). Symlinked folders are followed
    once: a symlink loop is detected and not walked again.

    Raises:
        InputNotFound: an argument names no file, folder or glob match (checked up front).
    """
    storage = resolved(storage)
    check_inputs(args, storage)
    base = base_folder(args, storage)
    keep = _NameFilter(patterns)
    skip = _Excluded(exclude)

    def item(path: str) -> InputItem:
        return InputItem(path=path, relative=locations.relative(path, base))

    for arg in args:
        store = storage.store(arg)
        if _is_glob(arg, storage):
            for path in store.glob(arg):
                if store.isdir(path) or skip.file(path):
                    continue
                if keep(locations.basename(path)):
                    yield item(path)
        elif store.isdir(arg):
            for path in _walk(store, arg, keep, skip):
                yield item(path)
        else:
            yield item(arg)


def _real(location: str) -> str:
    return locations.absolute(location) if locations.is_url(location) else \
        os.path.realpath(location)


class _Excluded:
    def __init__(self, folder: str | None):
        self.folder = _real(folder) if folder else None

    def is_folder(self, path: str) -> bool:
        return self.folder is not None and _real(path) == self.folder

    def file(self, path: str) -> bool:
        if self.folder is None:
            return False
        return _real(path) != self.folder and locations.inside(_real(path), self.folder)


def _walk(store, top: str, keep: _NameFilter, skip: _Excluded) -> Iterator[str]:
    visited: set = set()

    def first_visit(folder: str) -> bool:
        key = store.identity(folder)
        if key is None or key in visited:
            return False
        visited.add(key)
        return True

    if not first_visit(top):
        return
    for folder, dirnames, filenames in store.walk(top):
        dirnames[:] = sorted(
            d for d in dirnames if not skip.is_folder(locations.join(folder, d))
            and first_visit(locations.join(folder, d)))
        for name in sorted(filenames):
            if keep(name):
                yield locations.join(folder, name)

"""camcli's cache of converted weights.

Folder: ``$CAMCLI_CACHE``, else ``$XDG_CACHE_HOME/camcli``, else ``~/.cache/camcli``.

A converted model is stored as ``<name>.weights.h5`` (Keras' own weights format) beside
``<name>.json``, which records where the weights came from and a SHA-256 digest of the
weight values. A cache entry is used only when its source matches and its weights load and
hash to the recorded digest; otherwise (stale, corrupt, truncated) it is rebuilt.
Conversion runs under an exclusive file lock, and each file is written to a temporary name
and renamed, so two processes converting at once never see a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from camcli.io.atomic import create_temporary

log = logging.getLogger("camcli")

CACHE_ENV = "CAMCLI_CACHE"
FORMAT = 1


def cache_dir() -> Path:
    """The folder camcli caches converted weights in (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "camcli"


def weights_digest(model) -> str:
    """SHA-256 over every weight value of ``model``, in order."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(str(weight.shape).encode())
        digest.update(weight.astype("float32", copy=False).tobytes())
    return digest.hexdigest()


def paths(name: str) -> tuple[Path, Path]:
    folder = cache_dir()
    return folder / f"{name}.weights.h5", folder / f"{name}.json"


@contextlib.contextmanager
def _locked(folder: Path, name: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; atomic renames still keep files whole
        yield
        return
    with open(folder / f".{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def status(name: str, source: dict) -> str:
    """``cached`` when a cache entry for ``source`` exists (not verified), else ``absent``."""
    weights_path, meta_path = paths(name)
    meta = _read_meta(meta_path)
    ok = meta is not None and meta.get("source") == source and weights_path.is_file()
    return "cached" if ok else "absent"


def _read_meta(meta_path: Path) -> dict | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def _try_cached(model, name: str, source: dict) -> str | None:
    """Load the cache entry into ``model``; return None on success, else why not."""
    weights_path, meta_path = paths(name)
    if not weights_path.exists() and not meta_path.exists():
        return "absent"
    meta = _read_meta(meta_path)
    if meta is None:
        return "its record is missing or unreadable"
    if meta.get("source") != source:
        return "it was converted from another source"
    try:
        model.load_weights(weights_path)
    except Exception as exc:  # h5py/Keras raise many types for a damaged file
        return f"it does not load ({type(exc).__name__})"
    if weights_digest(model) != meta.get("sha256"):
        return "its weights do not match their recorded digest"
    return None


def load_or_convert(model, name: str, source: dict, convert: Callable[[object], None]) -> str:
    """Give ``model`` its converted weights, from the cache or by running ``convert(model)``.

    Args:
        name: the cache entry's name.
        source: JSON-serialisable identity of what the weights come from; a cache entry
            with another source is stale.
        convert: sets ``model``'s weights from the source.

    Returns:
        ``"cached"`` or ``"converted"``.
    """
    problem = _try_cached(model, name, source)
    if problem is None:
        log.debug("weights of %s loaded from the cache %s", name, paths(name)[0])
        return "cached"
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("cannot create the cache folder %s (%s): converting %s in memory",
                    folder, exc.strerror or exc, name)
        convert(model)
        return "converted"
    with _locked(folder, name):
        problem = _try_cached(model, name, source)  # another process may have finished it
        if problem is None:
            return "cached"
        if problem != "absent":
            log.warning("cached weights of %s are unusable (%s): converting again", name, problem)
        started = time.perf_counter()
        convert(model)
        try:
            _store(model, name, source)
        except OSError as exc:
            log.warning("cannot write the cache in %s (%s); the conversion will run again "
                        "next time", folder, exc.strerror or exc)
        else:
            log.info("converted the weights of %s once, in %.1f s; cached in %s", name,
                     time.perf_counter() - started, paths(name)[0])
    return "converted"


def _store(model, name: str, source: dict) -> None:
    weights_path, meta_path = paths(name)
    folder = weights_path.parent
    temporaries = []
    try:
        fd, tmp_weights = create_temporary(str(folder), f".{name}-", ".weights.h5")
        os.close(fd)
        temporaries.append(tmp_weights)
        model.save_weights(tmp_weights, overwrite=True)
        meta = {"format": FORMAT, "source": source, "sha256": weights_digest(model)}
        fd, tmp_meta = create_temporary(str(folder), f".{name}-", ".json")
        temporaries.append(tmp_meta)
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f, indent=2)
        # Weights first: a record never describes a file that is not there yet.
        os.replace(tmp_weights, weights_path)
        os.replace(tmp_meta, meta_path)
    finally:
        for leftover in temporaries:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)

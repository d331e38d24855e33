"""camcli's metadata inside a ``.keras`` file: what ``camcli train`` saves beside the model
so that it can be used as it was trained (class names, preprocessing, target layer).

It is one JSON member of the ``.keras`` zip archive; Keras' ``load_model`` ignores it, and
a plain Keras re-save drops it.
"""

from __future__ import annotations

import json

#: Inside a ``.keras`` archive, what camcli needs to use the model as it was trained:
#: class names, preprocessing, target layer. Keras ignores the member.
METADATA_MEMBER = "camcli.json"


def read_metadata(path: str) -> dict | None:
    """The camcli metadata inside a ``.keras`` file (`METADATA_MEMBER`), or None."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_MEMBER not in archive.namelist():
                return None
            meta = json.loads(archive.read(METADATA_MEMBER).decode("utf-8"))
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("labels"), list):
        return None
    meta.setdefault("preprocess", "none")
    meta.setdefault("target_layer", None)
    return meta


def write_metadata(path: str, meta: dict) -> None:
    """Add camcli's metadata to a ``.keras`` file (see `METADATA_MEMBER`)."""
    import zipfile

    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(METADATA_MEMBER, json.dumps(meta, ensure_ascii=False, indent=1))

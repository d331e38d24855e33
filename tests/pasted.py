"""Labelled test images: sample photos pasted at known boxes on smooth backgrounds.

Used by the tests (through conftest) and by ``bench/boxes.py``; imports nothing of pytest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"

#: Sample photos and the ImageNet class the default model sees in each.
PASTED = {"cat.jpg": "Egyptian_cat", "coffee.jpg": "espresso", "camera.png": "tripod",
          "motorcycle.jpg": "moped"}


def pasted_tree(root: Path, per_class: int = 2, size: int = 320, seed: int = 0,
                folders: dict[str, str] | None = None, scale=(0.45, 0.6),
                photos: dict[str, str] | None = None, crop: float = 1.0
                ) -> list[tuple[str, str, tuple]]:
    """Sample photos pasted at known places on smooth random backgrounds, one folder per
    class: ``root/<folder>/<photo stem>_<i>.jpg``. Returns ``(relative path, class, box)``
    per image, the box ``(x0, y0, x1, y1)`` in pixels, x1 and y1 exclusive.

    ``folders`` maps a photo to its folder's name (default: the class's own name);
    ``scale`` is the range of the pasted photo's longer side, as a fraction of ``size``;
    ``photos`` maps sample photos to classes (default `PASTED`); with ``crop`` < 1 each
    paste is a random crop keeping ``crop`` to 1 of each side of the photo.
    """
    rng = np.random.default_rng(seed)
    made = []
    for photo, label in (photos or PASTED).items():
        with Image.open(SAMPLES / photo) as opened:
            whole = opened.convert("RGB")
        folder = (folders or {}).get(photo, label)
        for i in range(per_class):
            source = whole
            if crop < 1.0:
                keep_w, keep_h = (rng.uniform(crop, 1.0, 2) * whole.size).astype(int)
                left = int(rng.integers(0, whole.width - keep_w + 1))
                top = int(rng.integers(0, whole.height - keep_h + 1))
                source = whole.crop((left, top, left + keep_w, top + keep_h))
            coarse = rng.uniform(40, 215, (4, 4, 3)).astype(np.uint8)
            background = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
            factor = rng.uniform(*scale) * size / max(source.size)
            width, height = round(source.width * factor), round(source.height * factor)
            x0 = int(rng.integers(0, size - width + 1))
            y0 = int(rng.integers(0, size - height + 1))
            background.paste(source.resize((width, height), Image.LANCZOS), (x0, y0))
            relative = f"{folder}/{Path(photo).stem}_{i}.jpg"
            (root / folder).mkdir(parents=True, exist_ok=True)
            background.save(root / relative, quality=92)
            made.append((relative, label, (x0, y0, x0 + width, y0 + height)))
    return made


def corner_pasted(path: Path, photo: str, corner: str, canvas: int = 448,
                  fraction: float = 0.5, seed: int = 0) -> tuple:
    """``photo`` shrunk to ``fraction`` of a ``canvas`` x ``canvas`` smooth random
    background and pasted 8 pixels from its ``corner`` (``top-left``, ``top-right``,
    ``bottom-left``, ``bottom-right``), saved at ``path``. Returns the pasted photo's box
    ``(x0, y0, x1, y1)`` in the picture (all that is not background), far enough from the
    centre that a map peaking at the centre misses it."""
    rng = np.random.default_rng(seed)
    with Image.open(SAMPLES / photo) as opened:
        whole = opened.convert("RGB")
    coarse = rng.uniform(40, 215, (4, 4, 3)).astype(np.uint8)
    picture = Image.fromarray(coarse).resize((canvas, canvas), Image.BICUBIC)
    factor = fraction * canvas / max(whole.size)
    width, height = round(whole.width * factor), round(whole.height * factor)
    vertical, horizontal = corner.split("-")
    x0 = 8 if horizontal == "left" else canvas - width - 8
    y0 = 8 if vertical == "top" else canvas - height - 8
    picture.paste(whole.resize((width, height), Image.LANCZOS), (x0, y0))
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, quality=92)
    return x0, y0, x0 + width, y0 + height


def watermarked_tree(root: Path, per_class: int = 40, marked: float = 0.85, mark: int = 56,
                     size: int = 224, seed: int = 1) -> set[str]:
    """A Clever-Hans tree: two classes, ``a`` and ``b``, of the same pictures (any of the six
    sample photos pasted at 50-80% of a ``size`` x ``size`` smooth random background,
    anywhere); the first ``marked`` share of ``a``'s pictures carry a watermark, a
    ``mark``-pixel red-and-white checkerboard 4 pixels from the top-left corner. The label
    leaks through the mark and nothing else. Returns the marked pictures' relative paths."""
    rng = np.random.default_rng(seed)
    wholes = []
    for photo in ("cat.jpg", "coffee.jpg", "camera.png", "motorcycle.jpg", "rocket.jpg",
                  "astronaut.jpg"):
        with Image.open(SAMPLES / photo) as opened:
            wholes.append(opened.convert("RGB"))
    cell = mark // 4
    yy, xx = np.mgrid[0:mark, 0:mark]
    board = np.where((((yy // cell + xx // cell) % 2) == 1)[..., None], [255, 255, 255],
                     [220, 20, 60]).astype(np.uint8)
    stamped = set()
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            whole = wholes[rng.integers(len(wholes))]
            coarse = rng.uniform(40, 215, (4, 4, 3)).astype(np.uint8)
            picture = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
            factor = rng.uniform(0.5, 0.8) * size / max(whole.size)
            width, height = round(whole.width * factor), round(whole.height * factor)
            picture.paste(whole.resize((width, height), Image.LANCZOS),
                          (int(rng.integers(0, size - width + 1)),
                           int(rng.integers(0, size - height + 1))))
            relative = f"{folder}/{i}.jpg"
            if folder == "a" and i < int(marked * per_class):
                pixels = np.array(picture)
                pixels[4:4 + mark, 4:4 + mark] = board
                picture = Image.fromarray(pixels)
                stamped.add(relative)
            picture.save(root / relative, quality=92)
    return stamped


def shortcut_maps(count: int, share: float, seed: int, size: int = 16):
    """Clever-Hans-shaped saliency maps: ``count`` ``size`` x ``size`` maps summing to 1,
    ``share`` of them on a corner mark (with some of the object around it), the rest on
    objects of any size anywhere; and which are marked. Used by ``tests/test_audit.py``
    and ``bench/audit.py``."""
    rng = np.random.default_rng(seed)
    marked = rng.random(count) < share
    y, x = np.mgrid[0:size, 0:size] * (16 / size)  # the same pictures at any size

    def blob(cx, cy, width):
        return np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / width)

    maps = []
    for is_marked in marked:
        heat = blob(*rng.uniform(2, 14, 2), rng.uniform(4, 20))
        if is_marked:
            heat = blob(*(np.array([2.5, 2.5]) + rng.normal(0, 0.7, 2)), 6) \
                + rng.uniform(0, 0.6) * heat
        heat = heat + rng.uniform(0, 0.05, heat.shape)
        maps.append((heat / heat.sum()).ravel())
    return np.array(maps, np.float32), marked

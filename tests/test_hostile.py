"""A corpus of every awkward file a real dataset contains, through ``camcli batch``: each
input ends as a correct overlay (oriented and sized like the photo) or as one error record
naming the reason; the run never crashes and exits 1."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from conftest import png_header_only, run, write_image
from PIL import Image


@pytest.fixture
def corpus(tmp_path):
    """Returns the tree and, per relative path, the overlay size expected (or an error)."""
    root = tmp_path / "hostile"
    root.mkdir()
    expect = {}

    (root / "empty.jpg").write_bytes(b"")
    expect["empty.jpg"] = "empty file"
    whole = write_image(tmp_path / "whole.jpg", size=(300, 200)).read_bytes()
    (root / "truncated.jpg").write_bytes(whole[:900])
    expect["truncated.jpg"] = "corrupt image data"
    (root / "notes.jpg").write_text("a text file wearing a .jpg\n")
    expect["notes.jpg"] = "not a recognised image format"
    (root / "bomb.png").write_bytes(png_header_only(60_000, 60_000))
    expect["bomb.png"] = "image too large"

    deep = np.zeros((20, 30, 3), np.uint16)
    deep[..., 2] = 65535
    cv2.imwrite(str(root / "deep16.png"), deep)
    expect["deep16.png"] = (30, 20)
    Image.new("CMYK", (30, 20), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    expect["cmyk.jpg"] = (30, 20)
    palette = Image.new("P", (25, 15))
    palette.putpalette([255, 0, 0] * 256)
    palette.info["transparency"] = 0
    palette.save(root / "palette.png", transparency=0)
    expect["palette.png"] = (25, 15)
    frames = [Image.new("RGB", (16, 12), c) for c in ("red", "blue")]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    expect["anim.gif"] = (16, 12)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20), "green").save(root / "rotated.jpg", exif=exif)
    expect["rotated.jpg"] = (20, 40)  # shown upright: width and height swap
    Image.new("RGB", (1, 1), "white").save(root / "dot.png")
    expect["dot.png"] = (1, 1)
    write_image(root / "panorama.jpg", size=(10000, 50))
    expect["panorama.jpg"] = (10000, 50)
    write_image(root / "ünï cødé 猫.jpg", size=(32, 24))
    expect["ünï cødé 猫.jpg"] = (32, 24)
    write_image(root / "with  two spaces .png", size=(33, 25))
    expect["with  two spaces .png"] = (33, 25)

    locked = write_image(root / "locked.jpg", size=(31, 23))
    os.chmod(locked, 0)
    expect["locked.jpg"] = (31, 23) if os.geteuid() == 0 else "permission denied"
    os.mkfifo(root / "fifo.jpg")
    expect["fifo.jpg"] = "not a regular file"
    os.symlink(root / "gone.jpg", root / "dangling.jpg")
    expect["dangling.jpg"] = "file not found"

    outside = write_image(tmp_path / "elsewhere" / "far.jpg", size=(29, 21))
    os.symlink(outside, root / "link.jpg")  # a symlinked file: processed under its own name
    expect["link.jpg"] = (29, 21)
    os.symlink(outside.parent, root / "linked_dir")  # a symlinked folder outside the tree
    expect["linked_dir/far.jpg"] = (29, 21)
    os.symlink(root, root / "loop")  # a loop back to the top
    return root, expect


def test_every_hostile_input_gets_an_overlay_or_a_reason(corpus, tmp_path, model_args):
    root, expect = corpus
    out = tmp_path / "out"
    result = run(["batch", str(root), "--out", str(out), "-q", *model_args])
    assert result.exit_code == 1

    with open(out / "manifest.jsonl", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    by_relative = {os.path.relpath(r["input"], root): r for r in records}
    assert len(records) == len(by_relative) == len(expect)  # one record each, loop walked once
    assert set(by_relative) == set(expect)
    for relative, wanted in expect.items():
        record = by_relative[relative]
        if isinstance(wanted, str):
            assert record["error"] is not None and record["error"].startswith(wanted), relative
            assert record["output"] is None
            assert f"Error: {record['input']}: {wanted}" in result.stderr
        else:
            assert record["error"] is None, (relative, record["error"])
            output = os.path.realpath(out / record["output"])
            assert output.startswith(os.path.realpath(out) + os.sep)  # never outside --out
            with Image.open(output) as overlay:
                assert overlay.size == wanted, relative
                assert overlay.format == "JPEG"
    assert (out / "ünï cødé 猫.jpg").is_file() and (out / "with  two spaces .jpg").is_file()
    assert (out / "linked_dir" / "far.jpg").is_file() and (out / "link.jpg").is_file()
    assert not (out / "loop").exists()

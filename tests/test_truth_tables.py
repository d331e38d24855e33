"""One rule for every table of truth (``score --truth``, ``audit --truth``, ``--class-from``):
a row names an input by its trailing path parts, and a row name that several inputs end with
is refused. Checked on a Caltech-style run where every class has an ``image_0001.jpg``, each
with boxes of its own: the boxes of ``faces/image_0001.jpg`` are never those of
``airplanes/image_0001.jpg``.

The run is written by hand (records, saved maps, photos): no model runs here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run, write_image

IMAGES = 12
#: Each class's true box (photo pixels, 100 x 80): airplanes top-left, faces bottom-right.
BOXES = {"airplanes": (5, 5, 45, 35), "faces": (55, 45, 95, 75)}


@pytest.fixture(scope="module")
def caltech(tmp_path_factory):
    """A finished run over ``Caltech/<class>/image_00NN.jpg`` whose maps all look at the
    top-left: right for the airplanes, wrong for the faces."""
    root = tmp_path_factory.mktemp("caltech")
    out = root / "out"
    rng = np.random.default_rng(0)
    lines, rows = [], ["input,class,x0,y0,x1,y1"]
    for index, label in enumerate(BOXES):
        for number in range(1, IMAGES + 1):
            name = f"image_{number:04d}"
            photo = write_image(root / "Caltech" / label / f"{name}.jpg", size=(100, 80))
            heatmap = rng.uniform(0, 0.02, (8, 8)).astype(np.float32)
            heatmap[1:3, 1:3] = 1.0  # top-left: inside the airplanes' box, not the faces'
            (out / label).mkdir(parents=True, exist_ok=True)
            np.save(out / label / f"{name}.npy", heatmap)
            lines.append(json.dumps({
                "schema": 2, "input": str(photo), "output": f"{label}/{name}.jpg",
                "map": f"{label}/{name}.npy", "model": "m", "layer": "conv",
                "method": "gradcam", "target": "class", "requested_class": index,
                "class_source": "folder", "class_index": index, "label": label,
                "score": 0.9, "top": [[index, label, 0.9]], "peak": [18, 15],
                "time": "2026-01-01T00:00:00.000Z"}))
            rows.append(f"{label}/{name}.jpg,{label},{','.join(map(str, BOXES[label]))}")
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (root / "truth.csv").write_text("\n".join(rows) + "\n")
    # the same rows by file name only: each name matches one input of each class
    (root / "bare.csv").write_text("\n".join(
        [rows[0]] + [row.split("/", 1)[1] for row in rows[1:]]) + "\n")
    return root


def test_score_takes_each_inputs_own_boxes(caltech):
    result = run(["score", str(caltech / "out"), "--truth", str(caltech / "truth.csv"),
                  "--format", "json"])
    assert result.exit_code == 0, result.output
    classes = json.loads(result.stdout)["classes"]
    assert classes["airplanes"]["pointing"] == 1.0  # the peak (18, 15) is in its box
    assert classes["faces"]["pointing"] == 0.0  # and not in the faces' own box
    assert classes["faces"]["pairs"] == IMAGES


def test_audit_takes_each_inputs_own_boxes(caltech):
    result = run(["audit", str(caltech / "out"), "--truth", str(caltech / "truth.csv"),
                  "--format", "json", "--no-report"])
    assert result.exit_code == 0, result.output
    found = {c["class"]: c["clusters"] for c in json.loads(result.stdout)["classes"]}
    for cluster in found["airplanes"]:
        assert cluster["mass_in_boxes"] > 0.5 and not cluster["flagged"], cluster
    for cluster in found["faces"]:  # mostly outside the faces' boxes: flagged
        assert cluster["mass_in_boxes"] < 0.2 and cluster["flagged"], cluster
    written = json.loads((caltech / "out" / "audit.json").read_text())
    assert written == json.loads(result.stdout)  # the file the report reads


@pytest.mark.parametrize("command", ["score", "audit"])
def test_a_row_name_several_inputs_end_with_is_refused(caltech, command):
    args = [command, str(caltech / "out"), "--truth", str(caltech / "bare.csv")]
    result = run(args + (["--no-report"] if command == "audit" else []))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {caltech / 'bare.csv'}: {IMAGES} row name(s) match several inputs of the run "
        "(image_0001.jpg, image_0002.jpg, image_0003.jpg, image_0004.jpg, image_0005.jpg); "
        "give their paths from the input folder")

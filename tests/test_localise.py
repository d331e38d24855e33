"""Where the maps point: peaks and boxes against independent computations, boxes drawn, and
`camcli score` against hand counts."""

from __future__ import annotations

import json
from collections import deque

import cv2
import numpy as np
import pytest
from conftest import pasted_tree, run
from PIL import Image

from camcli.analysis import localise
from camcli.records.manifest import ManifestWriter, Record, Request


def components_box(upsampled: np.ndarray, threshold: float):
    """The CAM paper's rule by hand: pixels >= threshold * max, 8-connected regions found
    by a breadth-first walk, the largest one's bounding box (x1, y1 exclusive)."""
    mask = upsampled >= threshold * upsampled.max()
    seen = np.zeros_like(mask)
    best, best_area = None, 0
    height, width = mask.shape
    for y in range(height):
        for x in range(width):
            if not mask[y, x] or seen[y, x]:
                continue
            queue, seen[y, x] = deque([(y, x)]), True
            area, x0, y0, x1, y1 = 0, x, y, x, y
            while queue:
                cy, cx = queue.popleft()
                area += 1
                x0, y0, x1, y1 = min(x0, cx), min(y0, cy), max(x1, cx), max(y1, cy)
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] \
                                and not seen[ny, nx]:
                            seen[ny, nx] = True
                            queue.append((ny, nx))
            if area > best_area:
                best, best_area = [x0, y0, x1 + 1, y1 + 1], area
    return best


def test_box_rules_on_made_maps():
    heatmap = np.zeros((60, 80), np.float32)
    heatmap[5:15, 5:30] = 1.0  # the maximum, a small region (250 px)
    heatmap[30:55, 40:75] = 0.6  # above 0.5 of it, and larger (875 px)
    assert localise.box(heatmap, 0.5) == [40, 30, 75, 55] == components_box(heatmap, 0.5)
    assert localise.box(heatmap, 0.7) == [5, 5, 30, 15]
    assert localise.peak(heatmap) == [5, 5]  # first maximum in raster order
    assert localise.box(np.zeros((4, 4), np.float32), 0.5) is None
    assert localise.peak(np.zeros((4, 4), np.float32)) is None
    diagonal = np.eye(6, dtype=np.float32)  # one region through the corners: 8-connected
    assert localise.box(diagonal, 0.5) == [0, 0, 6, 6]


def test_iou_and_distance():
    assert localise.iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert localise.iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert localise.distance_to_box([5, 5], [0, 0, 10, 10]) == 0.0
    assert localise.distance_to_box([12, 5], [0, 0, 10, 10]) == 3.0  # the last column is 9
    assert localise.distance_to_box([13, 13], [0, 0, 10, 10]) == pytest.approx(np.hypot(4, 4))


@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    """Pasted photos explained with the default model, their folder's class, boxes, maps."""
    work = tmp_path_factory.mktemp("localise")
    made = pasted_tree(work / "tree", per_class=2, seed=5)
    out = work / "out"
    result = run(["batch", str(work / "tree"), "--out", str(out), "--class-from", "folder",
                  "--boxes", "--save-maps", "-q"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return work, made, out, records


def test_peaks_and_boxes_equal_an_independent_computation(explained):
    work, made, out, records = explained
    assert len(records) == len(made) == 8
    for record in records:
        with Image.open(record["input"]) as photo:
            width, height = photo.size
        heatmap = np.load(out / record["map"])
        upsampled = cv2.resize(heatmap, (width, height), interpolation=cv2.INTER_LINEAR)
        y, x = np.unravel_index(np.argmax(upsampled), upsampled.shape)
        assert record["peak"] == [int(x), int(y)]
        assert record["box"] == components_box(upsampled, 0.5)


def test_the_maps_point_at_the_pasted_photos(explained):
    work, made, out, records = explained
    truth = {str(work / "tree" / relative): box for relative, _, box in made}
    near = [localise.distance_to_box(r["peak"], truth[r["input"]]) <= 15 for r in records]
    assert sum(near) >= 7, near  # the pointing game, by hand: 7 or 8 of 8


def test_the_box_is_drawn_on_the_overlay(explained):
    work, made, out, records = explained
    record = records[0]
    x0, y0, x1, y1 = record["box"]
    picture = np.asarray(Image.open(out / record["output"]).convert("L"), np.int32)
    middle = (x0 + x1) // 2
    assert picture[y0, middle] > 200 or picture[y0 + 1, middle] > 200  # the white line
    plain = run(["gradcam", record["input"], "-o", str(work / "plain.jpg"), "--class-from",
                 "folder"])
    assert plain.exit_code == 0
    unboxed = np.asarray(Image.open(work / "plain.jpg").convert("L"), np.int32)
    assert np.abs(picture - unboxed)[y0 - 3:y0 + 4, x0:x1].mean() > 20


def test_score_by_hand(tmp_path):
    """Three inputs with known peaks and boxes; the truth file counted by hand."""
    out = tmp_path / "run"
    out.mkdir()
    request = Request("m", "l", "gradcam", "top1")
    top = lambda *classes: [[c, f"c{c}", 0.1] for c in classes]  # noqa: E731
    rows = [
        # explains 1, its class; peak inside the box; box IoU 0.68 -> pointing and loc hits
        Record(input="/d/a/1.jpg", request=request, class_index=1, label="c1", top=top(1, 2),
               peak=[15, 15], box=[10, 10, 30, 30], output="a/1.jpg"),
        # explains 2 but the truth is 1: classification miss, no map of 1 to score
        Record(input="/d/a/2.jpg", request=request, class_index=2, label="c2",
               top=top(2, 1, 3), peak=[50, 50], box=[0, 0, 5, 5], output="a/2.jpg"),
        # explains 3 (true); peak 21 px from the boxes: pointing miss; best IoU 0.25: miss
        Record(input="/d/b/3.jpg", request=request, class_index=3, label="c3", top=top(3),
               peak=[60, 10], box=[0, 0, 40, 40], output="b/3.jpg"),
    ]
    writer = ManifestWriter(str(out / "manifest.jsonl"))
    for record in rows:
        writer.append([record])
    writer.close()
    labels = tmp_path / "labels.txt"
    labels.write_text("c0\nc1\nc2\nc3\n")
    truth = tmp_path / "truth.csv"
    truth.write_text("input,class,x0,y0,x1,y1\n"
                     "a/1.jpg,c1,12,12,32,32\n"
                     "2.jpg,c1,0,0,10,10\n"
                     "b/3.jpg,c3,0,0,40,10\n"
                     "b/3.jpg,c3,30,30,40,40\n")
    result = run(["score", str(out), "--truth", str(truth), "--labels", str(labels),
                  "--format", "json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    overall = scores["overall"]
    assert overall["pairs"] == 3
    assert overall["top1"] == pytest.approx(2 / 3) and overall["top5"] == pytest.approx(1.0)
    assert (overall["pointed"], overall["pointing"]) == (2, pytest.approx(0.5))
    assert (overall["boxed"], overall["localisation"]) == (2, pytest.approx(0.5))
    # best IoUs: 18*18 / (400 + 400 - 324) and 400 / 1600 (the second true box of c3)
    assert overall["mean_iou"] == pytest.approx((324 / 476 + 400 / 1600) / 2)
    assert scores["classes"]["c1"]["pairs"] == 2 and scores["classes"]["c1"]["pointing"] == 1.0
    assert scores["classes"]["c3"]["pointing"] == 0.0

    table = run(["score", str(out / "manifest.jsonl"), "--truth", str(truth), "--labels",
                 str(labels)])
    assert table.stdout.splitlines()[-1].split() == ["all", "3", "66.7%", "100.0%", "50.0%",
                                                     "50.0%", f"{(324 / 476 + 0.25) / 2:.3f}",
                                                     "n/a"]
    gate = run(["score", str(out), "--truth", str(truth), "--labels", str(labels),
                "--min-pointing", "0.6", "--min-loc", "0.5"])
    assert gate.exit_code == 1
    assert gate.stderr.strip().splitlines()[-1] == "Error: pointing game 0.500 is below 0.6"


def test_score_of_a_real_run(explained):
    work, made, out, records = explained
    truth = work / "truth.csv"
    truth.write_text("input,class,x0,y0,x1,y1\n" + "".join(
        f"{relative},{label},{x0},{y0},{x1},{y1}\n" for relative, label, (x0, y0, x1, y1)
        in made))
    result = run(["score", str(out), "--truth", str(truth), "--format", "json",
                  "--min-pointing", "0.8"])
    assert result.exit_code == 0, result.output
    overall = json.loads(result.stdout)["overall"]
    by_hand = {str(work / "tree" / m[0]): m[2] for m in made}
    ious = [localise.iou(r["box"], by_hand[r["input"]]) for r in records]
    assert overall["mean_iou"] == pytest.approx(np.mean(ious))
    assert overall["localisation"] == pytest.approx(np.mean(np.array(ious) >= 0.5))
    assert overall["pointed"] == 8 and overall["pairs"] == 8
    no_boxes = run(["score", str(out), "--truth", str(tmp_missing(work)), "--min-loc", "0.5"])
    assert no_boxes.exit_code == 2
    assert no_boxes.stderr.strip().splitlines()[-1] == (
        "Error: --min-loc: nothing to localise (no boxes in the run, or no true boxes of the "
        "classes it explained)")
    coco = work / "truth.json"
    coco.write_text(json.dumps({
        "images": [{"id": i, "file_name": m[0]} for i, m in enumerate(made)],
        "categories": [{"id": 1, "name": "Egyptian_cat"}, {"id": 2, "name": "espresso"},
                       {"id": 3, "name": "tripod"}, {"id": 4, "name": "moped"}],
        "annotations": [{"image_id": i, "category_id": ["Egyptian_cat", "espresso", "tripod",
                                                        "moped"].index(m[1]) + 1,
                         "bbox": [m[2][0], m[2][1], m[2][2] - m[2][0], m[2][3] - m[2][1]]}
                        for i, m in enumerate(made)]}))
    from_coco = run(["score", str(out), "--truth", str(coco), "--format", "json"])
    assert json.loads(from_coco.stdout)["overall"] == overall


def tmp_missing(work):
    """A truth file with classes only (no boxes)."""
    path = work / "classes-only.csv"
    path.write_text("input,class\ncat_0.jpg,Egyptian_cat\n")
    return path


# -- MaxBoxAccV2 and calibration ------------------------------------------------------------


def two_blobs() -> np.ndarray:
    """A 40x40 map: a strong blob on [4, 14) x [4, 14) (value 1) and a weaker, larger one on
    [20, 36) x [20, 36) (value 0.6); zero elsewhere."""
    heatmap = np.zeros((40, 40), np.float32)
    heatmap[4:14, 4:14] = 1.0
    heatmap[20:36, 20:36] = 0.6
    return heatmap


def test_box_hits_by_hand():
    from camcli.analysis.score import BOX_THRESHOLDS, box_hits

    # The truth is the weak blob: a hit only while the threshold keeps it (t <= 0.6) and
    # drops the zeros around it (t > 0): then the weak blob is a region of its own.
    hits = box_hits(two_blobs(), [[20, 20, 36, 36]])
    kept = (BOX_THRESHOLDS > 0) & (BOX_THRESHOLDS <= 0.6)
    np.testing.assert_array_equal(hits[:, 0], kept)  # IoU 1 at every IoU level
    np.testing.assert_array_equal(hits[:, 2], kept)
    # At t = 0 the one region is the whole map: IoU 256 / 1600 = 0.16, a miss.
    assert hits[0].tolist() == [0, 0, 0]
    # The largest-region box of the CAM paper would pick the weak blob too, but a truth of
    # the strong blob is also hit: any region counts.
    strong = box_hits(two_blobs(), [[4, 4, 14, 14]])
    assert strong[BOX_THRESHOLDS.tolist().index(0.5)].tolist() == [1, 1, 1]
    assert not box_hits(np.zeros((5, 5), np.float32), [[0, 0, 5, 5]]).any()


def test_score_computes_max_box_acc_v2_and_the_calibrated_threshold(tmp_path):
    """Two photos with saved maps; MaxBoxAccV2 and the calibrated threshold by hand."""
    out = tmp_path / "run"
    (out / "maps").mkdir(parents=True)
    request = Request("m", "l", "gradcam", "top1")
    rows = []
    for name in ("a", "b"):
        photo = tmp_path / f"{name}.png"
        Image.new("RGB", (80, 80)).save(photo)  # the maps are 40x40: upsampled 2x
        np.save(out / "maps" / f"{name}.npy", two_blobs())
        rows.append(Record(input=str(photo), request=request, class_index=1, label="c1",
                           top=[[1, "c1", 0.9]], peak=[9, 9], box=[0, 0, 4, 4],
                           output=f"{name}.jpg", map=f"maps/{name}.npy"))
    writer = ManifestWriter(str(out / "manifest.jsonl"))
    for record in rows:
        writer.append([record])
    writer.close()
    labels = tmp_path / "labels.txt"
    labels.write_text("c0\nc1\n")
    truth = tmp_path / "truth.csv"
    # a: the weak blob (photo pixels, 2x); b: the strong blob
    truth.write_text("input,class,x0,y0,x1,y1\na.png,c1,40,40,72,72\nb.png,c1,8,8,28,28\n")
    result = run(["score", str(out), "--truth", str(truth), "--labels", str(labels),
                  "--format", "json"])
    assert result.exit_code == 0, result.output
    overall = json.loads(result.stdout)["overall"]
    assert overall["mapped"] == 2
    # The strong blob is a region for every t > 0; the weak one for 0 < t <= 0.6
    # (bilinear upsampling blurs the edges only: the boxes' IoUs stay above 0.7 here).
    assert overall["max_box_acc"] == {"0.3": 1.0, "0.5": 1.0, "0.7": 1.0}
    assert overall["max_box_acc_v2"] == 1.0
    assert overall["calibrated_threshold"] == 0.01  # the first threshold with both hits
    # The records' boxes miss both; boxes derived again at 0.5 take the largest region,
    # the weak blob: a hit for a only.
    assert overall["localisation"] == 0.0
    again = run(["score", str(out), "--truth", str(truth), "--labels", str(labels),
                 "--format", "json", "--box-threshold", "0.5"])
    rederived = json.loads(again.stdout)["overall"]
    assert rederived["localisation"] == 0.5 and rederived["boxed"] == 2
    table = run(["score", str(out), "--truth", str(truth), "--labels", str(labels)])
    assert table.stdout.splitlines()[-1] == (
        "calibrated --box-threshold 0.01: box accuracy 100.0% at IoU 0.5 over 2 saved maps "
        "(best over thresholds at IoU 0.3 / 0.5 / 0.7: 100.0% / 100.0% / 100.0%)")


def test_box_threshold_needs_saved_maps(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    writer = ManifestWriter(str(out / "manifest.jsonl"))
    writer.append([Record(input=str(tmp_path / "x.png"), request=Request("m", "l", "gradcam",
                                                                         "top1"),
                          class_index=0, label="c0", top=[[0, "c0", 1.0]], output="x.jpg")])
    writer.close()
    truth = tmp_path / "truth.csv"
    truth.write_text("input,class,x0,y0,x1,y1\nx.png,c0,0,0,5,5\n")
    result = run(["score", str(out), "--truth", str(truth), "--box-threshold", "0.4"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --box-threshold derives the boxes from the saved maps, and the run saved "
        "none: run batch with --save-maps")


def test_a_real_run_rederives_its_own_boxes(explained):
    work, made, out, records = explained
    truth = work / "truth.csv"
    truth.write_text("input,class,x0,y0,x1,y1\n" + "".join(
        f"{relative},{label},{x0},{y0},{x1},{y1}\n" for relative, label, (x0, y0, x1, y1)
        in made))
    plain = run(["score", str(out), "--truth", str(truth), "--format", "json"])
    same = run(["score", str(out), "--truth", str(truth), "--format", "json",
                "--box-threshold", "0.5"])  # the threshold the run used
    first, second = json.loads(plain.stdout)["overall"], json.loads(same.stdout)["overall"]
    assert first["mapped"] == 8
    assert second["localisation"] == first["localisation"]
    assert second["mean_iou"] == pytest.approx(first["mean_iou"])
    assert 0.0 < first["max_box_acc_v2"] <= 1.0

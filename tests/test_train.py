"""camcli train: a CAM head on a labelled folder tree, offline, on the CPU."""

from __future__ import annotations

import json

import numpy as np
from conftest import TRAIN_PHOTOS as PHOTOS
from conftest import pasted_tree, run, train_tree

from camcli.compute.models import load

# The trained head, `trained`, is conftest's: one for the session.
tree = train_tree


def test_the_trained_model_beats_chance_on_held_out_images(trained):
    work, model, result = trained
    held_out = tree(work / "held_out", per_class=4, seed=99)
    predicted = run(["predict", str(work / "held_out"), "--model", str(model), "--format",
                     "json"])
    assert predicted.exit_code == 0, predicted.output
    truth = {str(work / "held_out" / relative): relative.split("/")[0]
             for relative, _, _ in held_out}
    rows = json.loads(predicted.stdout)
    right = sum(row["top"][0]["label"] == truth[row["input"]] for row in rows)
    assert len(rows) == 24 and right >= 20, right  # chance: 4 of 24


def test_it_reloads_with_its_labels_and_layer(trained):
    work, model, _ = trained
    loaded = load(str(model))
    assert loaded.labels.names == tuple(sorted(PHOTOS.values()))
    assert loaded.default_layer == "top_activation" and loaded.preprocess == "none"
    import keras

    plain = keras.models.load_model(model, safe_mode=True)  # no camcli needed
    assert plain.output.shape[-1] == 6


def test_the_report_beside_the_model(trained):
    work, model, result = trained
    report = json.loads((work / "model.json").read_text())
    assert report["classes"] == sorted(PHOTOS.values())
    # 8 readable images a class (bike's broken file is skipped), 2 held out (1 for bike
    # when the split, made before reading, held out the broken file)
    assert {name: sum(c.values()) for name, c in report["counts"].items()} == dict.fromkeys(
        PHOTOS.values(), 8)
    assert all(c["validation"] in (1, 2) for c in report["counts"].values())
    assert 0.5 <= report["val_top1"] <= report["val_top5"] <= 1.0
    assert set(report["per_class"]) == set(PHOTOS.values())
    assert {s["reason"] for s in report["skipped"]} >= {"not in a class folder"}
    assert any(s["input"].endswith("broken.jpg") for s in report["skipped"])
    assert report["command"] == (f"camcli train {work / 'tree'} --output {model} "
                                 "--val-split 0.25 --seed 3 -q")
    assert f"validation: top-1 {report['val_top1']:.1%}" in result.stdout


def test_cam_on_the_trained_model_points_at_the_object(trained):
    work, model, _ = trained
    held_out = tree(work / "pointing", per_class=3, seed=7)
    truth = work / "truth.csv"
    truth.write_text("input,class,x0,y0,x1,y1\n" + "".join(
        f"{relative},{relative.split('/')[0]},{x0},{y0},{x1},{y1}\n"
        for relative, _, (x0, y0, x1, y1) in held_out))
    out = work / "heatmaps"
    explained = run(["batch", str(work / "pointing"), "--out", str(out), "--model", str(model),
                     "--method", "cam", "--class-from", "folder", "-q"])
    assert explained.exit_code == 0, explained.output
    scored = run(["score", str(out), "--truth", str(truth), "--format", "json",
                  "--min-pointing", "0.8"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["overall"]["pairs"] == 18


def test_bad_trees_and_outputs_are_refused(trained, tmp_path):
    work, model, _ = trained
    one = tmp_path / "one"
    pasted_tree(one, per_class=2, photos={"cat.jpg": "cat"})
    refused = run(["train", str(one), "-o", str(tmp_path / "m.keras")])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"Error: {one} has 1 class folder(s) with images: training needs at least two (one "
        "sub-folder per class)")
    few = tmp_path / "few"
    pasted_tree(few, per_class=2, photos={"cat.jpg": "cat", "coffee.jpg": "cup"})
    (few / "cup" / "coffee_1.jpg").unlink()
    refused = run(["train", str(few), "-o", str(tmp_path / "m.keras")])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "Error: every class needs at least two images; these have fewer: cup (1)")
    exists = run(["train", str(work / "tree"), "-o", str(model)])
    assert exists.exit_code == 2
    assert exists.stderr.strip().splitlines()[-1] == (
        f"Error: {model} exists: pass --overwrite to replace it")
    suffix = run(["train", str(work / "tree"), "-o", str(tmp_path / "m.h5")])
    assert suffix.exit_code == 2 and "--output must end with .keras" in suffix.stderr
    missing = run(["train", str(work / "tree")])
    assert missing.exit_code == 2 and "Error: Missing option '-o' / '--output'." in \
        missing.stderr


def test_the_old_name_of_output_still_works_with_a_warning(trained, tmp_path):
    work, model, _ = trained
    old = run(["train", str(work / "tree"), "--out", str(model)])
    assert old.exit_code == 2  # it reached the model file, which exists
    assert "camcli: train --out is now -o/--output (--out names a folder in the other " \
        "commands); --out still works" in old.stderr
    assert old.stderr.strip().splitlines()[-1] == (
        f"Error: {model} exists: pass --overwrite to replace it")
    both = run(["train", str(work / "tree"), "--out", str(model), "-o", str(model)])
    assert both.exit_code == 2
    assert both.stderr.strip().splitlines()[-1] == (
        "Error: give -o/--output once (--out is its old name)")


def test_an_interrupted_save_leaves_no_model(tmp_path, monkeypatch):
    import camcli.compute.models

    def interrupted(path, meta):
        raise KeyboardInterrupt

    monkeypatch.setattr(camcli.compute.models, "write_metadata", interrupted)
    pasted_tree(tmp_path / "small", per_class=2, photos={"cat.jpg": "cat", "coffee.jpg": "cup"})
    out = tmp_path / "models" / "m.keras"
    result = run(["train", str(tmp_path / "small"), "-o", str(out), "--epochs", "2", "-q"])
    assert result.exit_code == 1 and "Aborted!" in result.output  # click's Ctrl-C
    assert not out.exists()
    assert not [p for p in (tmp_path / "models").iterdir()]  # no temporary left either


def test_train_writes_its_model_into_a_bucket_with_the_same_weights(bucket, tmp_path,
                                                                    monkeypatch):
    """``train -o s3://...``: Keras saves to a local temporary file, which is uploaded
    whole, and the report goes beside it; nothing is written on local disk (no ``./s3:/``
    folder). The same tree and seed give the same model as a local run, weight for weight:
    the split, the head's start and its batches are all seeded."""
    import fsspec
    from test_buckets import objects

    small = tmp_path / "small"
    pasted_tree(small, per_class=4, photos={"cat.jpg": "cat", "coffee.jpg": "cup"}, seed=2)
    settings = ["--val-split", "0.25", "--seed", "5", "--epochs", "6", "-q"]
    local = run(["train", str(small), "-o", str(tmp_path / "local.keras"), *settings])
    assert local.exit_code == 0, local.output
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # where a path mistaken for a local one would appear
    result = run(["train", str(small), "-o", f"{bucket}/models/m.keras", *settings])
    assert result.exit_code == 0, result.output
    assert objects(bucket) == [f"{bucket[5:]}/models/m.json", f"{bucket[5:]}/models/m.keras"]
    assert list(work.iterdir()) == []
    report = json.loads(fsspec.filesystem("s3").cat(f"{bucket[5:]}/models/m.json"))
    assert report["model"] == f"{bucket}/models/m.keras" and report["classes"] == ["cat", "cup"]
    first, again = load(str(tmp_path / "local.keras")), load(f"{bucket}/models/m.keras")
    assert again.labels.names == first.labels.names == ("cat", "cup")
    for a, b in zip(first.model.get_weights(), again.model.get_weights(), strict=True):
        assert np.array_equal(a, b)
    refused = run(["train", str(small), "-o", f"{bucket}/models/m.keras"])
    assert refused.exit_code == 2 and refused.stderr.strip().splitlines()[-1] == (
        f"Error: {bucket}/models/m.keras exists: pass --overwrite to replace it")

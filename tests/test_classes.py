"""A class per image: --class-from folder | FILE, checked before any work; the records say
what was asked and where it came from."""

from __future__ import annotations

import json

import pytest
from conftest import pasted_tree, run

from camcli.errors import UsageProblem
from camcli.io.labels import imagenet
from camcli.io.tables import read_table


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelled") / "tree"
    # Folder names spelled as people do: any case, '_' / '-' / space, a WordNet id.
    made = pasted_tree(root, per_class=2, folders={"cat.jpg": "egyptian cat",
                                                   "coffee.jpg": "n07920052",
                                                   "camera.png": "Tripod",
                                                   "motorcycle.jpg": "moped"})
    return root, made


def lines(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_each_image_explains_its_folder_class(tree, tmp_path):
    root, made = tree
    out = tmp_path / "out"
    args = ["batch", str(root), "--out", str(out), "--class-from", "folder", "-q"]
    result = run(args)
    assert result.exit_code == 0, result.output
    wanted = {str(root / relative): imagenet().resolve(label, 1000)
              for relative, label, _ in made}
    records = lines(out)
    assert {r["input"]: r["class_index"] for r in records} == wanted
    for record in records:
        assert (record["target"], record["class_source"]) == ("class", "folder")
        assert record["requested_class"] == record["class_index"]
    assert "8 inputs: 0 written, 8 already done" in run(args).stderr
    top1 = run(["batch", str(root), "--out", str(out), "-q"])  # another request: redone
    assert "8 inputs: 8 written, 0 already done" in top1.stderr


def test_folders_that_name_no_class_are_refused_before_any_work(tree, tmp_path):
    root, _ = tree
    for name in ("yin_yang", "BACKGROUND_Google"):
        (root / name).mkdir(exist_ok=True)
        for i in range(2):
            (root / name / f"x{i}.jpg").write_bytes((root / "moped" / "motorcycle_0.jpg")
                                                    .read_bytes())
    try:
        out = tmp_path / "out"
        refused = run(["batch", str(root), "--out", str(out), "--class-from", "folder"])
        assert refused.exit_code == 2
        assert refused.stderr.strip().splitlines()[-1] == (
            "Error: --class-from: 2 class names in folder names are not classes of the "
            "model: 'BACKGROUND_Google' (2 inputs), 'yin_yang' (2 inputs); pass "
            "--skip-unknown-classes to give those inputs an error record and go on")
        assert not (out / "manifest.jsonl").exists() or not lines(out)

        skipped = run(["batch", str(root), "--out", str(out), "--class-from", "folder",
                       "--skip-unknown-classes", "-q"])
        assert skipped.exit_code == 1
        errors = {r["input"].rsplit("/", 2)[-2]: r["error"] for r in lines(out) if r["error"]}
        assert errors == {"yin_yang": "class 'yin_yang' (from its folder) is not a class of "
                                      "the model",
                          "BACKGROUND_Google": "class 'BACKGROUND_Google' (from its folder) is "
                                               "not a class of the model"}
        assert sum(1 for r in lines(out) if not r["error"]) == 8
    finally:
        for name in ("yin_yang", "BACKGROUND_Google"):
            for path in (root / name).iterdir():
                path.unlink()
            (root / name).rmdir()


def test_unknown_names_suggest_the_closest_labels(tree, tmp_path):
    root, _ = tree
    table = tmp_path / "truth.csv"
    table.write_text("input,class\ncat_0.jpg,egyptian kat\n")
    result = run(["gradcam", str(root / "egyptian cat" / "cat_0.jpg"), "--class-from",
                  str(table), "-o", str(tmp_path / "x.jpg")])
    assert result.exit_code == 2
    assert "'egyptian kat' (1 input; closest: Egyptian_cat)" in result.stderr


def test_a_table_gives_the_classes(tree, tmp_path):
    root, made = tree
    table = tmp_path / "truth.csv"
    rows = ["input,class"]
    for number, (relative, label, _) in enumerate(made):
        name = relative if number % 2 else relative.split("/")[-1]  # path, or file name
        rows.append(f"{name},{label}")
    table.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = run(["batch", str(root), "--out", str(out), "--class-from", str(table), "-q"])
    assert result.exit_code == 0, result.output
    assert {r["class_source"] for r in lines(out)} == {"file"}
    assert all(r["label"] == dict((str(root / m[0]), m[1]) for m in made)[r["input"]]
               for r in lines(out))

    jsonl = tmp_path / "truth.jsonl"
    jsonl.write_text("".join(json.dumps({"input": relative, "class": label}) + "\n"
                             for relative, label, _ in made[:-1]))  # the last one is missing
    refused = run(["batch", str(root), "--out", str(tmp_path / "o2"), "--class-from",
                   str(jsonl)])
    assert refused.exit_code == 2
    assert f"1 input has no class in {jsonl}" in refused.stderr


def test_a_file_name_that_names_two_inputs_is_ambiguous(tmp_path):
    root = tmp_path / "tree"
    pasted_tree(root, per_class=1)
    (root / "espresso" / "cat_0.jpg").write_bytes((root / "Egyptian_cat" / "cat_0.jpg")
                                                  .read_bytes())
    table = tmp_path / "truth.csv"
    table.write_text("input,class\ncat_0.jpg,Egyptian_cat\nmoped/motorcycle_0.jpg,moped\n"
                     "coffee_0.jpg,espresso\ntripod/camera_0.jpg,tripod\n")
    result = run(["batch", str(root), "--out", str(tmp_path / "o"), "--class-from", str(table)])
    assert result.exit_code == 2
    assert "1 row name in" in result.stderr and "match several inputs (cat_0.jpg)" in \
        result.stderr


def test_top_k_maps_with_classes_from_folders(tree, tmp_path):
    root, _ = tree
    out = tmp_path / "out"
    args = ["batch", str(root / "Tripod"), str(root / "moped"), "--out", str(out),
            "--class-from", "folder", "--top-k-maps", "2", "-q"]
    assert run(args).exit_code == 0
    records = lines(out)
    assert len(records) == 4 * 3
    for record in records:
        assert record["target"] == "top-k+class"
        if record["rank"] is None:
            assert record["class_index"] == record["requested_class"]
            assert ".class-" in record["output"]
        else:
            assert f".{record['rank']}-" in record["output"]
            assert record["class_index"] == record["top"][record["rank"] - 1][0]
        assert (out / record["output"]).is_file()
    assert "4 inputs: 0 written, 4 already done" in run(args).stderr


def test_single_image_commands_take_the_class_from_the_folder(tree, tmp_path):
    root, _ = tree
    result = run(["gradcam", str(root / "n07920052" / "coffee_1.jpg"), "--class-from",
                  "folder", "--out", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{tmp_path / 'x' / 'coffee_1_gradcam.jpg'}: espresso "
                                    "(class 967) ")


def test_tables_in_three_formats(tmp_path):
    (tmp_path / "t.csv").write_text("input,class,x0,y0,x1,y1\na/b.jpg,cat,1,2,30,40\n")
    (tmp_path / "t.jsonl").write_text('{"input": "a/b.jpg", "class": "cat", '
                                      '"box": [1, 2, 30, 40]}\n')
    (tmp_path / "t.json").write_text(json.dumps({
        "images": [{"id": 7, "file_name": "a/b.jpg"}],
        "annotations": [{"image_id": 7, "category_id": 3, "bbox": [1, 2, 29, 38]}],
        "categories": [{"id": 3, "name": "cat"}]}))
    for name in ("t.csv", "t.jsonl", "t.json"):
        (row,) = read_table(str(tmp_path / name))
        assert (row.input, row.label, row.box) == ("a/b.jpg", "cat", (1.0, 2.0, 30.0, 40.0))
    (tmp_path / "bad.csv").write_text("input,class,x0,y0,x1,y1\na.jpg,cat,5,5,5,9\n")
    with pytest.raises(UsageProblem, match="x1 > x0 and y1 > y0"):
        read_table(str(tmp_path / "bad.csv"))

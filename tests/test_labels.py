"""Class names and --class resolution."""

from __future__ import annotations

import pytest

from camcli.errors import ClassError, UsageProblem
from camcli.io import labels


def test_imagenet_names_ship_with_the_package():
    names = labels.imagenet()
    assert len(names) == 1000
    assert names.name(0) == "tench" and names.name(281) == "tabby" and names.name(999)
    assert names.ids[0] == "n01440764"


@pytest.mark.parametrize("spec, index", [("281", 281), (281, 281), ("tabby", 281),
                                         ("Tiger Cat", 282), ("n02123045", 281)])
def test_resolve(spec, index):
    assert labels.imagenet().resolve(spec, 1000) == index


def test_ambiguous_name_lists_the_candidates():
    with pytest.raises(ClassError, match=r"'crane' is ambiguous: it names classes "
                                         r"134 \(n02012849\), 517 \(n03126707\)"):
        labels.imagenet().resolve("crane", 1000)


def test_out_of_range_and_unknown():
    with pytest.raises(ClassError, match="class index 1000 is out of range: the model has 1000"):
        labels.imagenet().resolve("1000", 1000)
    with pytest.raises(ClassError, match="unknown class 'unicorn'"):
        labels.imagenet().resolve("unicorn", 1000)


def test_labels_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n\n")
    assert labels.from_file(str(path)).names == ("cat", "dog")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(UsageProblem, match="is empty"):
        labels.from_file(str(empty))


@pytest.mark.parametrize("text, names, ids", [
    ('["red thing", "green thing"]', ("red thing", "green thing"), None),
    ('{"1": "green thing", "0": "red thing"}', ("red thing", "green thing"), None),
    ('{"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]}', ("tench", "goldfish"),
     ("n01440764", "n01443537")),
])
def test_labels_file_in_json(tmp_path, text, names, ids):
    path = tmp_path / "labels.json"
    path.write_text(text)
    read = labels.from_file(str(path))
    assert read.names == names and read.ids == ids
    assert read.resolve(names[1], 2) == 1
    if ids:
        assert read.resolve(ids[1], 2) == 1  # WordNet ids work for --class


def test_labels_json_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text('{"0": "cat", "2": "dog"}')
    with pytest.raises(UsageProblem, match="from 0 to 1 without gaps; missing 1"):
        labels.from_file(str(path))
    path.write_text('["cat", 7]')
    with pytest.raises(UsageProblem, match="class 1 is not a name"):
        labels.from_file(str(path))
    path.write_text('["cat", ')
    with pytest.raises(UsageProblem, match="is not valid JSON"):
        labels.from_file(str(path))


def test_a_text_label_may_start_like_json(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("[unused]\ndog\n")
    assert labels.from_file(str(path)).names == ("[unused]", "dog")


def test_predict_names_classes_from_a_json_list(tmp_path, model_files):
    import json

    from conftest import run, write_image

    names = tmp_path / "names.json"
    names.write_text(json.dumps(["red thing", "green thing", "blue thing"]))
    photo = write_image(tmp_path / "red.png", size=(40, 30))
    result = run(["predict", str(photo), "--model", model_files["gap"], "--labels", str(names),
                  "--preprocess", "scale01", "--device", "cpu", "--format", "json"])
    assert result.exit_code == 0, result.output
    top = json.loads(result.stdout)[0]["top"]
    assert {entry["label"] for entry in top} == {"red thing", "green thing", "blue thing"}

"""Class names and --class resolution."""

from __future__ import annotations

import pytest

from camcli import labels
from camcli.errors import ClassError, UsageProblem


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

"""Finding inputs: folder walks, globs, patterns, relative paths, loops, exclusions."""

from __future__ import annotations

import os

import pytest
from conftest import write_image

from camcli.errors import InputNotFound
from camcli.io.inputs import discover


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "data"
    for rel in ["b/2.jpg", "b/1.PNG", "a/x.jpeg", "a/deep/y.jpg", "top.bmp"]:
        write_image(root / rel)
    (root / "a" / "readme.txt").write_text("not an image")
    return root


def test_folder_walk_is_sorted_recursive_and_relative(tree):
    items = list(discover([str(tree)]))
    assert [i.relative for i in items] == ["top.bmp", "a/x.jpeg", "a/deep/y.jpg", "b/1.PNG",
                                           "b/2.jpg"]
    assert items[0].path == os.path.join(str(tree), "top.bmp")


def test_pattern_filters_case_insensitively(tree):
    assert [i.relative for i in discover([str(tree)], ["*.png"])] == ["b/1.PNG"]


def test_quoted_glob_and_files_share_a_base(tree):
    items = list(discover([str(tree / "b" / "*.jpg"), str(tree / "a" / "x.jpeg")]))
    assert [i.relative for i in items] == ["b/2.jpg", "a/x.jpeg"]


def test_symlink_loop_is_walked_once(tree):
    os.symlink(tree, tree / "a" / "loop")
    relatives = [i.relative for i in discover([str(tree)])]
    assert len(relatives) == len(set(relatives)) == 5


def test_output_folder_inside_the_input_is_skipped(tree):
    write_image(tree / "out" / "top.jpg")
    relatives = [i.relative for i in discover([str(tree)], exclude=str(tree / "out"))]
    assert "out/top.jpg" not in relatives and len(relatives) == 5


def test_missing_path_is_named(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(InputNotFound, match=f"{missing}: no such file or directory"):
        list(discover([missing]))


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(InputNotFound, match=r"no file matches '.*\*\.jpg'"):
        list(discover([str(tmp_path / "*.jpg")]))

"""``camcli audit``: each step of spectral relevance analysis on maps made so the answer is
known (groups, eigengaps, memberships), and the command on a run made by hand."""

from __future__ import annotations

import json
import re

import html5lib
import numpy as np
import pytest
from conftest import cards, dom, run, write_image
from pasted import shortcut_maps, watermarked_tree

from camcli.analysis import audit
from camcli.records.manifest import ManifestWriter, Record, Request


def blob(center, size=16, width=2.0):
    y, x = np.mgrid[0:size, 0:size]
    return np.exp(-((x - center[0]) ** 2 + (y - center[1]) ** 2) / (2 * width ** 2))


CORNERS = [(3, 3), (12, 12), (3, 12)]


def grouped(groups: int, per_group: int, seed: int = 0):
    """``groups`` kinds of maps (a blob at one corner each, jittered, noisy), shuffled; the
    true group of each."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(groups), per_group)
    rng.shuffle(truth)
    maps = [blob(np.array(CORNERS[g]) + rng.normal(0, 0.7, 2)) + rng.uniform(0, 0.03, (16, 16))
            for g in truth]
    return np.stack([audit.prepared(m, 16) for m in maps]), truth


def same_partition(labels, truth) -> bool:
    pairs = {(int(a), int(b)) for a, b in zip(labels, truth, strict=True)}
    return len(pairs) == len(set(labels)) == len(set(truth))


@pytest.mark.parametrize("groups", [2, 3])
def test_the_eigengap_counts_the_groups_and_kmeans_finds_them(groups):
    maps, truth = grouped(groups, per_group=30)
    flat = maps.reshape(len(maps), -1)
    values, _ = audit.spectrum(flat, 9)
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert audit.eigengap(values) == groups
    labels, *_ = audit.clusters_of(flat, None, 8)
    assert same_partition(labels, truth)


def test_prepared_maps_sum_to_one_and_blank_stays_blank():
    heat = np.zeros((7, 7), np.float32)
    heat[1, 2] = 3.0
    small = audit.prepared(heat, 4)
    assert small.shape == (4, 4) and small.sum() == pytest.approx(1.0)
    assert not audit.prepared(np.zeros((7, 7)), 4).any()


def made_run(tmp_path, per_group=12, blanks=2, with_maps=True):
    """A run by hand: photos, saved maps of two kinds (a blob top-left or bottom-right) and
    some all-zero maps, all of class 'cat'; 3 maps of class 'dog'."""
    out = tmp_path / "run"
    (out / "maps").mkdir(parents=True)
    writer = ManifestWriter(str(out / "manifest.jsonl"))
    rng = np.random.default_rng(1)
    kinds = ["tl"] * per_group + ["br"] * per_group + ["blank"] * blanks + ["dog"] * 3
    for number, kind in enumerate(kinds):
        photo = write_image(tmp_path / "photos" / f"{kind}{number:02d}.png", size=(64, 64))
        if kind == "blank":
            heat = np.zeros((8, 8), np.float32)
        else:
            corner = (1.5, 1.5) if kind in ("tl", "dog") else (6, 6)
            heat = blob(np.array(corner) + rng.normal(0, 0.3, 2), size=8, width=1.0)
        name = f"maps/{kind}{number:02d}.npy"
        if with_maps:
            np.save(out / name, heat.astype(np.float32))
        label = "dog" if kind == "dog" else "cat"
        writer.append([Record(input=str(photo), request=Request("m", "l", "gradcam", "top1"),
                              class_index=int(label == "dog"), label=label,
                              top=[[0, label, 0.9]], output=f"{kind}{number:02d}.jpg",
                              map=name if with_maps else None)])
    writer.close()
    return out


def test_audit_of_a_run_finds_both_strategies_and_the_blank_maps(tmp_path):
    out = made_run(tmp_path)
    truth = tmp_path / "truth.csv"
    truth.write_text("input,class,x0,y0,x1,y1\n" + "".join(
        f"{p.name},cat,32,32,64,64\n" for p in sorted((tmp_path / "photos").iterdir())))
    result = run(["audit", str(out), "--format", "json", "--truth", str(truth)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert json.loads((out / "audit.json").read_text()) == document
    cat, dog = document["classes"]
    assert (dog["class"], dog["skipped"]) == ("dog", "3 maps, fewer than --min-images 10")
    assert cat["class"] == "cat" and cat["images"] == 26
    sizes = [(c["size"], c["blank"]) for c in cat["clusters"]]
    assert sizes == [(12, False), (12, False), (2, True)]
    for cluster in cat["clusters"][:2]:
        kinds = {m.rsplit("/", 1)[1][:2] for m in cluster["members"]}
        assert len(kinds) == 1  # one kind per cluster, exactly
        top_left = kinds == {"tl"}
        assert (cluster["peak"][0] < 0.5) == top_left and (cluster["peak"][1] < 0.5) == top_left
        assert len(cluster["prototypes"]) == 4 and set(cluster["prototypes"]) <= \
            set(cluster["members"])
        # the true boxes are the bottom-right quarter: the top-left strategy looks outside
        assert cluster["flagged"] == top_left
        assert (cluster["mass_in_boxes"] < 0.5) == top_left
    assert len(cat["eigenvalues"]) == 9 and cat["eigenvalues"][0] == pytest.approx(0, abs=1e-6)
    table = run(["audit", str(out), "--truth", str(truth)])
    assert "FLAGGED: attention outside the objects" in table.stdout
    assert "all-zero maps" in table.stdout
    two = run(["audit", str(out), "--clusters", "3", "--class", "cat", "--format", "json"])
    assert len(json.loads(two.stdout)["classes"][0]["clusters"]) == 4  # 3 + the blank ones


def test_a_run_without_saved_maps_is_one_line(tmp_path):
    out = made_run(tmp_path, with_maps=False)
    result = run(["audit", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {out}: the run saved no maps; run camcli batch again with --save-maps (the "
        "audit reads the maps, not the overlays)")
    bad = run(["audit", str(out), "--clusters", "many"])
    assert bad.exit_code == 2



def test_the_first_gap_is_never_the_answer():
    # gaps 0.5 (one cluster), 0.1, 0.3: the largest from two clusters on is at three
    assert audit.eigengap(np.array([0.0, 0.5, 0.6, 0.9])) == 3
    assert audit.eigengap(np.array([0.0, 0.9, 0.95])) == 2
    assert audit.eigengap(np.array([0.0, 0.4])) == 1  # two maps: at most one gap


def test_a_tight_shortcut_group_is_split_from_a_diffuse_rest():
    """The Clever-Hans shape: 85% of the maps on a corner mark (with some of the object
    around), the rest on objects of any size anywhere. The largest gap is the first (one
    cluster); the audit still parts them: every cluster all marked or all clean, or
    nearly."""
    flat, marked = shortcut_maps(100, 0.85, seed=1)
    values, _ = audit.spectrum(flat, 9)
    assert np.argmax(np.diff(values)) == 0  # one cluster, by the plain rule
    labels, *_ = audit.clusters_of(flat, None, 8)
    majority = sum(max(marked[labels == c].sum(), (~marked[labels == c]).sum())
                   for c in np.unique(labels))
    assert labels.max() >= 1 and majority / len(flat) >= 0.95, majority


@pytest.fixture(scope="module")
def clever_hans(tmp_path_factory):
    """A model that learnt a watermark: ``camcli train`` on a tree where most of class
    ``a``'s pictures carry a mark in the top-left corner and nothing else tells the
    classes apart; then ``batch --save-maps`` (each picture explained as its folder's
    class) and ``audit``."""
    work = tmp_path_factory.mktemp("clever_hans")
    marked = {str(work / "tree" / relative) for relative in watermarked_tree(work / "tree")}
    trained = run(["train", str(work / "tree"), "-o", str(work / "model.keras"), "-q"])
    assert trained.exit_code == 0, trained.output
    done = run(["batch", str(work / "tree"), "--model", str(work / "model.keras"),
                "--class-from", "folder", "--save-maps", "--out", str(work / "out"), "-q"])
    assert done.exit_code == 0, done.output
    audited = run(["audit", str(work / "out"), "--format", "json"])
    assert audited.exit_code == 0, audited.output
    return work, marked, json.loads(audited.stdout)


def test_the_audit_finds_the_watermark_a_model_learnt(clever_hans):
    work, marked, found = clever_hans
    classes = {c["class"]: c for c in found["classes"]}
    assert sorted(classes) == ["a", "b"] and len(marked) == 34
    clusters = [k for c in found["classes"] for k in c["clusters"]]
    # purity, watermarked vs clean, at the number of clusters the audit chose itself
    majority = sum(max(len(marked & set(k["members"])), k["size"] - len(marked &
                                                                        set(k["members"])))
                   for k in clusters)
    assert majority / sum(k["size"] for k in clusters) >= 0.85
    # one cluster holds most of the watermarked pictures, and little else...
    shortcut = max(classes["a"]["clusters"], key=lambda k: len(marked & set(k["members"])))
    share = len(marked & set(shortcut["members"]))
    assert share >= 0.6 * len(marked) and share >= 0.9 * shortcut["size"], shortcut
    # ...and its mean map peaks at the watermark's corner (the mark spans 2-27% of each side)
    x, y = shortcut["peak"]
    assert x < 0.3 and y < 0.3, shortcut["peak"]
    assert shortcut["quadrants"]["top_left"] > 0.5, shortcut["quadrants"]
    # no cluster of mostly clean pictures looks at that corner; there are such clusters
    # (class b's pictures are all clean), and they hold every clean picture but a few
    clean = [k for k in clusters if len(marked & set(k["members"])) < 0.5 * k["size"]]
    assert sum(k["size"] for k in clean) >= 80 - len(marked) - 4, clean
    for cluster in clean:
        assert cluster["peak"][0] > 0.3 or cluster["peak"][1] > 0.3, cluster


@pytest.mark.chromium
def test_the_report_shows_the_audit_and_clicks_through_to_a_cluster(clever_hans):
    """``audit`` wrote the run's report with an Audit section; in Chromium: per class the
    spectrum with its gap, every map a point of the 2-D picture coloured by cluster, each
    cluster's mean map and prototypes, and a link that keeps the gallery to its members."""
    work, marked, found = clever_hans
    page = work / "out" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert '"mean_map"' in html and not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    html5lib.HTMLParser(strict=True).parse(html)  # raises on any parse error
    # readable without the script too: the clusters as a table
    table = re.findall(r"<tr><td>([^<]*)</td><td>(\d+)</td><td>(\d+)</td>", html)
    assert table == [(entry["class"], str(k["id"]), str(k["size"]))
                     for entry in found["classes"] for k in entry["clusters"]]
    document = dom(page, "")
    assert re.findall(r'<section class="audit-class" data-class="([^"]*)"', document) == \
        ["a", "b"]
    shown = re.findall(r'<div class="cluster[^"]*" data-cluster="(\d+):(\d+)"', document)
    expected = [(str(c), str(k["id"])) for c, entry in enumerate(found["classes"])
                for k in entry["clusters"]]
    assert shown == expected
    assert document.count('class="point"') == 80  # every map drawn
    assert document.count('class="gap"') == 2
    for entry in found["classes"]:
        assert f"gap: {entry['chosen']} clusters" in document
    assert document.count('alt="prototype"') == sum(
        len(k["prototypes"]) for entry in found["classes"] for k in entry["clusters"])
    # click-through: the shortcut cluster's members, and only they, in the gallery
    number = next(c for c, entry in enumerate(found["classes"]) if entry["class"] == "a")
    shortcut = max(found["classes"][number]["clusters"],
                   key=lambda k: len(marked & set(k["members"])))
    members = dom(page, f"#cluster={number}:{shortcut['id']}")
    assert len(cards(members)) == shortcut["size"]
    assert f"{shortcut['size']} shown" in members
    paths = set(re.findall(r'<div class="path">([^<]*)</div>', members))
    assert paths == set(shortcut["members"])


def test_above_the_sample_size_the_other_maps_join_their_neighbours_cluster(monkeypatch):
    """Past `SPECTRAL_SAMPLE` maps the spectrum is a sample's; every other map takes its
    nearest sampled maps' cluster: the same exact partition, and the sample is seeded."""
    monkeypatch.setattr(audit, "SPECTRAL_SAMPLE", 45)
    maps, truth = grouped(3, per_group=50)
    flat = maps.reshape(len(maps), -1)
    found = audit.clusters_of(flat, None, 8)
    assert len(found.rows) == 45 and len(found.labels) == 150
    assert len(found.embedding) == len(found.vectors) == 45
    assert same_partition(found.labels, truth)
    assert np.array_equal(audit.clusters_of(flat, None, 8).rows, found.rows)


def test_without_scikit_learn_the_audit_names_the_extra(tmp_path, monkeypatch):
    import sys

    out = made_run(tmp_path)
    monkeypatch.setitem(sys.modules, "sklearn.neighbors", None)  # import fails, as uninstalled
    result = run(["audit", str(out)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: camcli audit needs scikit-learn and SciPy (sklearn.neighbors is not "
        "installed): pip install 'camcli[audit]'")
    assert not (out / "audit.json").exists()

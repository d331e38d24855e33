"""Exactly once: a record states its request, resume compares requests, ties cannot make a
finished input look unfinished, and a manifest survives being moved or read from elsewhere."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import SAMPLES, TIED, run, tie_model, write_image
from PIL import Image

from camcli.compute.methods import rank_classes
from camcli.compute.models import LoadedModel
from camcli.io import labels
from camcli.io.inputs import InputItem
from camcli.options import BatchOptions, ExplainRequest
from camcli.records import manifest
from camcli.records.manifest import Group, ManifestWriter, Record, Request
from camcli.run.batch import plan
from camcli.run.session import Session


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    for i in range(5):
        write_image(root / f"c{i % 2}" / f"{i}.jpg", size=(40 + i, 30), color=(40 * i, 90, 200))
    (root / "c0" / "broken.jpg").write_bytes(b"not an image")
    return root


def lines(out, name="manifest.jsonl"):
    with open(out / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def tie_args(model_files):
    return ["--model", model_files["tie"], "--preprocess", "scale01", "--device", "cpu"]


# -- one rule for the top class -------------------------------------------------------------


def _explain(session, images):
    """The session's explainer on a batch, with the session's plan (no class per image)."""
    explained = session.explainer(images, session.plan.targets([None] * len(images)))
    return explained.probabilities, explained.maps


def test_tied_classes_rank_by_index_everywhere(keras):
    low, high = TIED
    loaded = LoadedModel("tie", tie_model(keras, classes=1000, tied=TIED), (32, 32), "scale01",
                         labels.imagenet())
    images = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
    explained = Session.create(loaded, ExplainRequest(top_k_maps=3))
    probabilities, maps = _explain(explained, images)
    assert np.array_equal(probabilities[:, low], probabilities[:, high])  # the premise
    assert (probabilities[:, low] == probabilities.max(axis=1)).all()
    assert (rank_classes(probabilities, 2) == [low, high]).all()
    assert {tuple(m.class_index for m in per_image)[:2] for per_image in maps} == {TIED}
    for method in ("gradcam", "scorecam", "eigencam"):  # each method's own top-1 choice
        _, plain = _explain(Session.create(loaded, ExplainRequest(method=method, max_maps=(
            2 if method == "scorecam" else None))), images)
        assert {per_image[0].class_index for per_image in plain} == {low}, method


def test_rerunning_on_tied_outputs_writes_and_appends_nothing(photos, tmp_path, model_files):
    out = tmp_path / "out"
    for extra in ([], ["--top-k-maps", "2"], ["--class", str(TIED[1])]):
        args = ["batch", str(photos), "--out", str(out), "-q", *tie_args(model_files), *extra]
        first = run(args)
        assert first.exit_code == 1  # the broken file
        before = (out / "manifest.jsonl").read_bytes()
        stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
        again = run(args)
        assert "6 inputs: 0 written, 5 already done, 1 failed" in again.stderr
        tail = (out / "manifest.jsonl").read_bytes()[len(before):]
        assert [json.loads(line)["error"] is not None for line in tail.splitlines()] == [True]
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")} == stamps
    records = lines(out)
    assert [r["target"] for r in records if r["error"] is None][-5:] == ["class"] * 5
    assert {r["requested_class"] for r in records if r["target"] == "class"} == {TIED[1]}
    top1 = [r for r in records if r["target"] == "top1" and r["error"] is None]
    assert {r["class_index"] for r in top1} == {TIED[0]} and {r["label"] for r in top1} == {
        "tabby"}
    assert all([r["top"][0][0], r["top"][1][0]] == list(TIED) for r in top1)


# -- requests, groups and supersession --------------------------------------------------------


def test_another_request_supersedes_and_readers_take_the_last(photos, tmp_path, model_files):
    out = tmp_path / "out"
    base = ["batch", str(photos / "c1"), "--out", str(out), "-q", *tie_args(model_files)]
    run(base)
    run([*base, "--method", "cam"])
    assert "2 inputs: 0 written, 2 already done" in run([*base, "--method", "cam"]).stderr
    assert "2 inputs: 2 written, 0 already done" in run(base).stderr  # gradcam again
    groups = manifest.latest(str(out))
    assert len(groups) == 2 and len(lines(out)) == 6
    assert {g.request.method for g in groups.values()} == {"gradcam"}
    assert all(g.time >= max(r["time"] for r in lines(out)[:4]) for g in groups.values())


def job(tmp_path, relative="a/x.png", save_maps=False):
    options = BatchOptions(out_dir=str(tmp_path), save_maps=save_maps)
    return options, InputItem(str(tmp_path / "in" / relative), relative)


def test_plan_compares_requests_and_files(tmp_path):
    request = Request("m", "conv", "gradcam", "top1")
    options, item = job(tmp_path)
    key = os.path.abspath(item.path)
    on_disk = {str(tmp_path / "a" / "x.jpg")}

    def decide(group, exists=on_disk.__contains__, wanted=request, top_k=None):
        return next(plan([item], options, lambda _: wanted, top_k,
                         {key: group} if group else {}, exists=exists)).done

    recorded = Group(request, "t", {None: ("a/x.jpg", None)})
    assert decide(recorded)
    assert not decide(None)
    assert not decide(recorded, exists=lambda path: False)  # the picture is gone
    assert not decide(recorded, wanted=Request("m", "conv", "cam", "top1"))
    assert not decide(recorded, wanted=Request("m", "conv", "gradcam", "class", 1))
    assert not decide(Group(request, "t", {None: ("a/x.jpg", None)}, failed=True))
    ranked = Request("m", "conv", "gradcam", "top-k")
    two = Group(ranked, "t", {1: ("a/x.1-cat.jpg", None), 2: ("a/x.2-dog.jpg", None)})
    everything = lambda path: True  # noqa: E731
    assert decide(two, exists=everything, wanted=ranked, top_k=2)
    assert decide(two, exists=everything, wanted=ranked, top_k=1)
    assert not decide(two, exists=everything, wanted=ranked, top_k=3)  # rank 3 missing
    assert not decide(recorded, exists=everything, wanted=ranked, top_k=1)  # not a ranked name


def test_a_group_is_one_write_and_a_torn_line_is_skipped(tmp_path):
    path = tmp_path / "manifest.jsonl"
    request = Request("m", "conv", "gradcam", "top-k")
    writer = ManifestWriter(str(path))
    writer.append([Record(input="/x.jpg", request=request, rank=r, output=f"x.{r}-a.jpg")
                   for r in (1, 2)])
    writer.close()
    with open(path, "ab") as f:
        f.write(b'{"schema": 2, "input": "/y.jpg", "outp')  # a killed run's torn line
    writer = ManifestWriter(str(path))  # ends the torn line
    writer.append([Record(input="/z.jpg", request=request, rank=1, output="z.1-a.jpg")])
    writer.close()
    records = list(manifest.read(str(path)))
    assert [(r.input, r.rank) for r in records] == [("/x.jpg", 1), ("/x.jpg", 2), ("/z.jpg", 1)]
    assert records[0].time == records[1].time  # stamped together
    assert set(manifest.latest(str(tmp_path))) == {"/x.jpg", "/z.jpg"}


def test_across_shard_parts_the_later_group_wins(tmp_path):
    old, new = Request("m", "l", "cam", "top1"), Request("m", "l", "gradcam", "top1")
    for name, request, stamp in [("manifest.jsonl", new, "2026-01-02T00:00:00.000Z"),
                                 ("manifest.1-of-2.jsonl", old, "2026-01-01T00:00:00.000Z")]:
        record = Record(input="/x.jpg", request=request, output="x.jpg", time=stamp)
        (tmp_path / name).write_text(record.to_json() + "\n")
    assert manifest.latest(str(tmp_path))["/x.jpg"].request == new


# -- portable manifests -----------------------------------------------------------------------


def test_a_copied_output_folder_reports_and_resumes_from_anywhere(photos, tmp_path,
                                                                    model_args):
    out = tmp_path / "work" / "heatmaps"
    (tmp_path / "work").mkdir()
    relative_input = os.path.relpath(photos, tmp_path / "work")
    first = run(["batch", relative_input, "--out", "heatmaps", "--save-maps", "-q",
                 *model_args], cwd=tmp_path / "work")
    assert first.exit_code == 1
    assert {r["output"] for r in lines(out) if r["output"]} == {
        "c0/0.jpg", "c1/1.jpg", "c0/2.jpg", "c1/3.jpg", "c0/4.jpg"}
    assert all(r["input"] == os.path.abspath(r["input"]) for r in lines(out))

    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, copy)
    elsewhere = tmp_path / "elsewhere"
    report = run(["report", "copy"], cwd=elsewhere)
    assert report.exit_code == 0, report.output
    page = (copy / "index.html").read_text(encoding="utf-8")
    from test_report import embedded

    items = embedded(page)
    assert sum(1 for i in items if i["output"]) == 5
    for item in items:
        if item["output"]:
            assert (copy / item["output"]).is_file() and (copy / item["overlay"]).is_file()
            assert (copy / item["original"]).is_file()

    for target, cwd in [(str(copy), elsewhere), (str(out), tmp_path)]:  # absolute paths now
        again = run(["batch", str(photos), "--out", target, "--save-maps", *model_args],
                    cwd=cwd)
        assert "6 inputs: 0 written, 5 already done, 1 failed" in again.stderr, target


def schema_1(records: list[dict], cwd, out) -> str:
    """The lines camcli 0.x wrote for these records, run from ``cwd``."""
    old = []
    for record in records:
        line = {key: record[key] for key in ("input", "output", "map", "model", "layer",
                                             "method", "class_index", "label", "score", "top",
                                             "metrics", "error")}
        line["input"] = os.path.relpath(record["input"], cwd)
        for key in ("output", "map"):
            if record[key]:
                line[key] = os.path.relpath(out / record[key], cwd)
        if record["rank"] is not None:
            line["rank"] = record["rank"]
        old.append(json.dumps(line) + "\n")
    return "".join(old)


@pytest.mark.parametrize("extra", [[], ["--class", "green thing"], ["--top-k-maps", "2"]])
def test_a_schema_1_manifest_still_resumes_and_reports(photos, tmp_path, model_args, extra):
    out = tmp_path / "out"
    args = ["batch", "photos", "--out", "out", "-q", *model_args, *extra]
    run(args, cwd=tmp_path)
    legacy = schema_1(lines(out), tmp_path, out)
    (out / "manifest.jsonl").write_text(legacy)

    again = run(args, cwd=tmp_path)
    assert "6 inputs: 0 written, 5 already done, 1 failed" in again.stderr
    assert (out / "manifest.jsonl").read_text().startswith(legacy)
    from test_report import embedded

    run(["report", "out"], cwd=tmp_path)  # schema-1 inputs are relative to where it ran
    items = embedded((out / "index.html").read_text(encoding="utf-8"))
    pictures = [i for i in items if i["output"]]
    assert len(pictures) == 5 * (2 if extra[:1] == ["--top-k-maps"] else 1)
    assert all((out / i["output"]).is_file() and (out / i["original"]).is_file()
               for i in pictures)


# -- panel, precision and parameters --------------------------------------------------------


def test_batch_writes_panels_too(photos, tmp_path, model_args):
    out = tmp_path / "panels"
    result = run(["batch", str(photos / "c1"), "--out", str(out), "--panel", *model_args])
    assert result.exit_code == 0, result.output
    with Image.open(out / "1.jpg") as picture:
        assert picture.size[0] == 3 * 41 and picture.size[1] > 30


def test_predict_by_default_is_the_model_in_fp32_even_on_a_bf16_cpu(monkeypatch, loaded):
    import keras

    from camcli.compute import backend
    from camcli.io.images import load_rgb, resize_for_model

    monkeypatch.setattr(backend, "cpu_has_fast_bf16", lambda: True)  # e.g. Zen 4, SPR
    assert backend.resolve_precision("auto", "/CPU:0") == "bf16"  # auto would change it
    photos = sorted(str(p) for p in SAMPLES.iterdir() if p.suffix == ".jpg")
    result = run(["predict", *photos, "--format", "json", "--top-k", "5", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    reference = loaded("efficientnet-lite0").model
    assert reference.dtype_policy.name == "float32" and keras.config.dtype_policy().name == \
        "float32"
    inputs = np.stack([resize_for_model(load_rgb(p), (224, 224)) for p in photos])
    expected = reference.predict(inputs, verbose=0)
    for row, probabilities in zip(json.loads(result.stdout), expected, strict=True):
        for entry in row["top"]:
            assert abs(entry["probability"] - probabilities[entry["class_index"]]) <= 1e-5


def test_the_library_names_parameters_and_the_cli_names_options(keras, model_args, photos):
    from camcli.errors import UsageProblem

    loaded = LoadedModel("tie", tie_model(keras), (32, 32), "scale01", labels.generic(3))
    with pytest.raises(UsageProblem) as info:
        Session.create(loaded, ExplainRequest(skip_unknown_classes=True))
    assert str(info.value) == "skip_unknown_classes goes with class_from"
    result = run(["batch", str(photos), "--out", str(photos / "o"), "--skip-unknown-classes",
                  *model_args])
    assert result.exit_code == 2
    assert result.stderr.strip().endswith(
        "Error: --skip-unknown-classes goes with --class-from")

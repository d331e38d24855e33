"""``camcli evaluate``: the known answers of Adebayo et al. on the default model and its own
photos, the scorecard's measures on the very maps ``batch`` saves, localisation by
``score``'s code path, a transformer's blocks as the cascade, buckets, and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run, write_image

from camcli.analysis import scorecard

REPO = Path(__file__).resolve().parents[1]

#: The issue's shape of a method's entry, which scripts read.
METHOD_KEYS = {"method", "sanity", "random_logit", "road", "deletion_auc", "insertion_auc",
               "max_sensitivity", "sparseness", "complexity", "pointing", "max_box_acc_v2",
               "seconds_per_image", "rank"}


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    write_image(folder / "a.jpg", size=(64, 48), color=(220, 20, 20))
    write_image(folder / "b.png", size=(50, 70), color=(20, 220, 20))
    write_image(folder / "c" / "d.jpeg", size=(40, 40), color=(20, 20, 220))
    return folder


def read(folder) -> dict:
    return json.loads((Path(folder) / "evaluate.json").read_text())


def by_method(document) -> dict:
    return {row["method"]: row for row in document["methods"]}


def test_on_the_default_model_gradcam_passes_and_guided_backprop_fails(tmp_path):
    """Adebayo et al.'s finding on EfficientNet-Lite0 with its ImageNet weights and the
    sample photos; randomcam, a baseline, is less faithful than Grad-CAM."""
    out = tmp_path / "scorecard"
    result = run(["evaluate", str(REPO / "sample_images"), "--out", str(out), "--methods",
                  "gradcam,guidedbackprop,randomcam", "--mprt-steps", "4", "--noise-copies",
                  "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    document = read(out)
    assert document["model"] == "efficientnet-lite0" and document["images"] == 6
    assert document["target"] == "top1" and document["recommended"] == "gradcam"
    rows = by_method(document)
    assert set(rows) == {"gradcam", "guidedbackprop", "randomcam"}
    for row in rows.values():
        assert METHOD_KEYS <= set(row)
        assert row["sanity"]["steps"] == ["classifier", "block10", "block5", "stem"]
        assert len(row["sanity"]["spearman"]) == len(row["sanity"]["ssim"]) == 4
        assert row["pointing"] is None and row["max_box_acc_v2"] is None
    gradcam, guided = rows["gradcam"]["sanity"], rows["guidedbackprop"]["sanity"]
    assert gradcam["passed"] is True and guided["passed"] is False
    # Well apart, not near the threshold: the classifier alone scrambles Grad-CAM.
    assert guided["first_half_spearman"] > 0.8 > 0.3 > gradcam["first_half_spearman"]
    assert guided["spearman"][0] > 0.9 > 0.3 > gradcam["spearman"][0]
    assert rows["randomcam"]["road"] < rows["gradcam"]["road"]
    assert rows["gradcam"]["rank"] == 1
    # The table, the best of each column marked, and the verdict.
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["method", "sanity", "rand.logit"]
    assert lines[1].split()[:2] == ["gradcam", "pass"]
    assert "recommended: gradcam" in result.stdout
    assert f"rule: {scorecard.RULE}" in result.stdout
    # The report: per method the photo's map on the model, then after each of 4 steps.
    page = (out / "evaluate.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 3 * 5
    assert "<svg" in page and "guidedbackprop<br>FAILS" in page


def test_the_scorecard_measures_the_maps_batch_saves(tmp_path, photos, model_args):
    """Sparseness and Complexity of the maps ``batch --save-maps`` writes (min-max
    normalised, at the input size), and the pointing game and MaxBoxAccV2 as ``camcli
    score`` computes them from the same maps and truth."""
    batch_out = tmp_path / "run"
    assert run(["batch", str(photos), "--out", str(batch_out), "--save-maps",
                *model_args]).exit_code == 0
    records = [json.loads(line) for line in (batch_out / "manifest.jsonl").open()]
    truth = tmp_path / "truth.csv"
    # A box of the predicted class for every photo, off the red, green or blue square.
    truth.write_text("input,class,x0,y0,x1,y1\n" + "".join(
        f"{Path(r['input']).name},{r['label']},0,0,20,20\n" for r in records))
    out = tmp_path / "scorecard"
    result = run(["evaluate", str(photos), "--out", str(out), "--methods", "gradcam,cam",
                  "--truth", str(truth), "--noise-copies", "2", *model_args])
    assert result.exit_code == 0, result.output
    document = read(out)
    assert document["images"] == 3
    rows = by_method(document)
    maps = [np.load(batch_out / r["map"]) for r in records]
    at_input = [scorecard.at_input_size(m, 32, 32) for m in maps]
    assert rows["gradcam"]["sparseness"] == pytest.approx(
        np.mean([scorecard.sparseness(m) for m in at_input]), rel=1e-5)
    assert rows["gradcam"]["complexity"] == pytest.approx(
        np.mean([scorecard.complexity(m) for m in at_input]), rel=1e-5)
    # Normalised CAM equals normalised Grad-CAM on a GAP -> Dense head.
    assert rows["cam"]["sparseness"] == pytest.approx(rows["gradcam"]["sparseness"], rel=1e-4)
    scored = run(["score", str(batch_out), "--truth", str(truth), "--format", "json",
                  "--labels", model_args[3]])
    overall = json.loads(scored.stdout)["overall"]
    assert overall["pointed"] == 3
    assert rows["gradcam"]["pointing"] == pytest.approx(overall["pointing"])
    assert rows["gradcam"]["max_box_acc_v2"] == pytest.approx(overall["max_box_acc_v2"])
    # Two steps on a model without named blocks: its weighted layers, from the top.
    assert rows["gradcam"]["sanity"]["steps"] == ["fc", "conv"]
    assert "pointing" in result.stdout.splitlines()[0]


def test_a_sample_is_seeded_and_the_model_comes_back_unchanged(tmp_path, photos, model_args,
                                                               monkeypatch):
    import keras

    from camcli.options import EvaluateOptions, ExplainRequest, ModelRequest
    from camcli.run import evaluate as evaluation

    kept = {}
    real = evaluation.load_model

    def load_once(model, storage=None):
        kept["loaded"] = real(model, storage)
        kept["before"] = [keras.ops.convert_to_numpy(w).copy()
                          for w in kept["loaded"][0].model.weights]
        return kept["loaded"]

    monkeypatch.setattr(evaluation, "load_model", load_once)
    model = ModelRequest(model=model_args[1], labels_file=model_args[3], preprocess="scale01",
                         device="cpu")
    options = EvaluateOptions(out_dir=str(tmp_path / "one"), methods=("gradcam",), sample=2,
                              noise_copies=1, seed=3)
    first = evaluation.evaluate([str(photos)], model, ExplainRequest(), options).document
    after = [keras.ops.convert_to_numpy(w) for w in kept["loaded"][0].model.weights]
    assert all(np.array_equal(a, b) for a, b in zip(kept["before"], after, strict=True))
    assert first["images"] == 2 and len(first["inputs"]) == 2
    again = evaluation.evaluate([str(photos)], model, ExplainRequest(),
                                EvaluateOptions(**{**options.__dict__,
                                                   "out_dir": str(tmp_path / "two")})).document
    assert again["inputs"] == first["inputs"]
    assert again["methods"][0]["sanity"]["spearman"] == first["methods"][0]["sanity"][
        "spearman"]


def test_a_transformer_is_randomised_block_by_block(tmp_path, keras):
    import hub_models

    path = tmp_path / "vit.keras"
    hub_models.vit(keras).save(path)
    hub_models.write_photos(tmp_path / "photos", seed=2)
    out = tmp_path / "scorecard"
    result = run(["evaluate", str(tmp_path / "photos"), "--out", str(out), "--model",
                  str(path), "--methods", "rollout,gradcam", "--noise-copies", "1",
                  "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = by_method(read(out))
    steps = rows["rollout"]["sanity"]["steps"]
    assert [s.rsplit("/", 1)[-1] for s in steps] == [
        "classifier", "transformer_block_2", "transformer_block_1", "stem"]
    assert rows["gradcam"]["sanity"]["steps"] == steps
    assert all(v is not None for v in rows["rollout"]["sanity"]["ssim"])


def test_the_inputs_and_the_scorecard_in_a_bucket(tmp_path, bucket, model_args):
    from test_buckets import bucket_tree, objects, put_tree

    put_tree(bucket_tree(tmp_path), f"{bucket}/tree")
    result = run(["evaluate", f"{bucket}/tree", "--out", f"{bucket}/eval", "--methods",
                  "gradcam", "--noise-copies", "1", *model_args])
    assert result.exit_code == 0, result.output
    names = [name.rsplit("/", 1)[-1] for name in objects(f"{bucket}/eval")]
    assert sorted(names) == ["evaluate.html", "evaluate.json"]
    import fsspec

    with fsspec.open(f"{bucket}/eval/evaluate.json") as handle:
        document = json.load(handle)
    # The broken JPEG is named and left out; the three photos are scored.
    assert document["images"] == 3
    assert [f["input"].rsplit("/", 1)[-1] for f in document["failed"]] == ["broken.jpg"]
    assert "sub/broken.jpg" in result.stderr


@pytest.mark.parametrize(("methods", "message"), [
    ("gradcam,nosuch", "Error: Invalid value for '--methods': no method 'nosuch'; choose "
                       "from all, cam, gradcam"),
    ("rollout", "Error: --methods: rollout does not apply to this model: rollout needs "
                "attention"),
])
def test_a_method_that_cannot_be_scored_is_refused(tmp_path, photos, model_args, methods,
                                                   message):
    result = run(["evaluate", str(photos), "--out", str(tmp_path / "out"), "--methods",
                  methods, *model_args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "out" / "evaluate.json").exists()


def test_an_output_folder_that_cannot_be_written_stops_it_before_any_work(tmp_path, photos,
                                                                          model_args):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run(["evaluate", str(photos), "--out", str(blocker / "out"), *model_args])
    assert result.exit_code == 1
    assert f"Error: cannot write to output folder {blocker / 'out'}" in result.stderr
    assert "model:" not in result.stderr

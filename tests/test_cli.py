"""The command line, end to end: real images in, real JPEGs and manifests out."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, SAMPLES, gap_model, run, write_image
from PIL import Image

from camcli.cli import main

MANIFEST_FIELDS = {"schema", "input", "output", "map", "model", "layer", "fuse", "tokens",
                   "class_specific",
                   "method", "settings", "target", "requested_class", "class_source", "rank",
                   "class_index", "label",
                   "score", "top", "peak", "box", "metrics", "precision", "error", "time"}


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "red.jpg", size=(64, 48), color=(220, 20, 20))
    write_image(root / "sub" / "green.png", size=(50, 70), color=(20, 220, 20))
    write_image(root / "sub" / "deeper" / "blue.jpeg", size=(33, 33), color=(20, 20, 220))
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def manifest(out):
    with open(out / "manifest.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_batch_mirrors_the_tree_and_records_everything(photos, tmp_path, model_args):
    out = tmp_path / "out"
    result = run(["batch", str(photos), "--out", str(out), "--save-maps", *model_args])
    assert result.exit_code == 1  # one input is broken
    assert f"Error: {photos / 'sub' / 'broken.jpg'}: " in result.stderr

    for rel, size in [("red", (64, 48)), ("sub/green", (50, 70)), ("sub/deeper/blue", (33, 33))]:
        with Image.open(out / f"{rel}.jpg") as overlay:
            assert overlay.format == "JPEG" and overlay.size == size
        heatmap = np.load(out / f"{rel}.npy")
        assert heatmap.dtype == np.float32 and heatmap.shape == (32, 32)
        assert 0.0 <= heatmap.min() and heatmap.max() <= 1.0

    records = {os.path.relpath(r["input"], photos): r for r in manifest(out)}
    assert set(records) == {"red.jpg", "sub/green.png", "sub/deeper/blue.jpeg",
                            "sub/broken.jpg"}
    for record in records.values():
        assert set(record) == MANIFEST_FIELDS
    good = records["red.jpg"]
    assert good["output"] == "red.jpg" and good["map"] == "red.npy"  # relative to the manifest
    assert records["sub/green.png"]["output"] == "sub/green.jpg"
    assert good["input"] == str(photos / "red.jpg") and os.path.isabs(good["input"])
    assert (good["schema"], good["target"], good["requested_class"], good["rank"]) == (
        2, "top1", None, None)
    assert good["precision"] == "fp32" and good["time"].endswith("Z")
    assert good["model"].endswith("tiny_gap.keras") and good["layer"] == "conv"
    assert good["method"] == "gradcam" and good["error"] is None
    assert good["label"] == ["red thing", "green thing", "blue thing"][good["class_index"]]
    assert len(good["top"]) == 3 and good["top"][0][0] == good["class_index"]
    assert good["score"] == pytest.approx(good["top"][0][2])
    assert sum(p for _, _, p in good["top"]) == pytest.approx(1.0, abs=1e-5)
    bad = records["sub/broken.jpg"]
    assert bad["output"] is None and bad["score"] is None and bad["top"] == []
    assert bad["error"].startswith("corrupt image data") or bad["error"] == (
        "not a recognised image format")


def test_rerun_skips_what_is_done_and_overwrite_redoes_it(photos, tmp_path, model_args):
    out = tmp_path / "out"
    args = ["batch", str(photos), "--out", str(out), *model_args]
    run(args)
    stamp = (out / "red.jpg").stat().st_mtime_ns
    os.remove(out / "sub" / "green.jpg")  # lost output: must be redone

    again = run(args)
    assert again.exit_code == 1  # the broken file is retried and fails again
    assert "4 inputs: 1 written, 2 already done, 1 failed" in again.stderr
    assert (out / "red.jpg").stat().st_mtime_ns == stamp
    assert (out / "sub" / "green.jpg").exists()

    forced = run([*args, "--overwrite"])
    assert "4 inputs: 3 written, 0 already done, 1 failed" in forced.stderr

    other_method = run([*args, "--method", "cam"])
    assert "4 inputs: 3 written, 0 already done, 1 failed" in other_method.stderr
    assert [r["method"] for r in manifest(out)][-4:] == ["cam"] * 4


def test_a_clean_run_exits_zero(tmp_path, model_args):
    write_image(tmp_path / "in" / "one.jpg")
    result = run(["batch", str(tmp_path / "in"), "--out", str(tmp_path / "o"), *model_args])
    assert result.exit_code == 0, result.output
    assert "1 inputs: 1 written, 0 already done, 0 failed" in result.stderr


def test_batch_on_the_sample_photos(tmp_path, model_args):
    out = tmp_path / "heatmaps"
    result = run(["batch", str(SAMPLES), "--out", str(out), "--method", "cam", *model_args])
    assert result.exit_code == 0, result.output
    photos = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
    assert len(photos) >= 5
    for photo in photos:
        with Image.open(photo) as original, Image.open(out / (photo.stem + ".jpg")) as overlay:
            assert overlay.size == original.size and overlay.mode == "RGB"
    assert len(manifest(out)) == len(photos)


def test_missing_input_is_a_usage_error_naming_the_path(tmp_path, model_args):
    missing = tmp_path / "nope"
    commands = (["batch", str(missing), "--out", str(tmp_path / "o")], ["predict", str(missing)],
                ["gradcam", str(missing)])
    for command in commands:
        result = run([*command, *model_args])
        assert result.exit_code == 2
        assert result.stderr.strip().endswith(f"Error: {missing}: no such file or directory")


def test_predict_json_and_csv_put_only_results_on_stdout(photos, model_args):
    red = str(photos / "red.jpg")
    result = run(["predict", red, "--format", "json", "--top-k", "2", *model_args])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert rows[0]["input"] == red and len(rows[0]["top"]) == 2
    assert set(rows[0]["top"][0]) == {"class_index", "label", "probability"}

    result = run(["predict", red, "--format", "csv", "--top-k", "3", *model_args])
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "input,rank,class_index,label,probability,error"
    assert len(lines) == 4 and lines[1].startswith(f"{red},1,")


def test_predict_reports_a_broken_image_and_exits_one(photos, model_args):
    result = run(["predict", str(photos / "red.jpg"), str(photos / "sub" / "broken.jpg"),
                  "--format", "json", *model_args])
    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert rows[0]["error"] is None and rows[1]["error"] and rows[1]["top"] == []


def test_cam_writes_stem_cam_jpg_in_the_current_folder(photos, tmp_path, model_args):
    work = tmp_path / "work"
    work.mkdir()
    result = run(["cam", str(photos / "red.jpg"), *model_args], cwd=work)
    assert result.exit_code == 0, result.output
    with Image.open(work / "red_cam.jpg") as overlay:
        assert overlay.size == (64, 48)
    line = result.stdout.strip()
    assert line.startswith("./red_cam.jpg: ") and "thing (class " in line and line.endswith("%")


def test_gradcam_output_file_and_out_folder(photos, tmp_path, model_args):
    target = tmp_path / "chosen.jpg"
    result = run(["gradcam", str(photos / "red.jpg"), "-o", str(target), *model_args])
    assert result.exit_code == 0 and target.exists()

    several = run(["gradcam", str(photos / "red.jpg"), str(photos / "sub" / "green.png"),
                   "--out", str(tmp_path / "many"), "--class", "green thing", *model_args])
    assert several.exit_code == 0, several.output
    assert (tmp_path / "many" / "red_gradcam.jpg").exists()
    assert (tmp_path / "many" / "sub" / "green_gradcam.jpg").exists()
    assert several.stdout.count("green thing (class 1)") == 2

    refused = run(["gradcam", str(photos / "red.jpg"), str(photos / "sub" / "green.png"),
                   "-o", str(target), *model_args])
    assert refused.exit_code == 2
    assert "Error: -o/--output takes one image, got 2; use --out DIR" in refused.stderr


def test_cam_on_a_model_without_gap_head_suggests_gradcam(photos, model_files):
    result = run(["cam", str(photos / "red.jpg"), "--model", model_files["flat"], "--device",
                  "cpu"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: CAM needs a global-average-pooling -> Dense head after layer 'conv', but the "
        "target layer feeds flatten (Flatten), not global average pooling; use gradcam instead")


@pytest.mark.parametrize("args, message", [
    (["--class", "purple thing"], "Error: unknown class 'purple thing'"),
    (["--layer", "nope"], "Error: no layer named 'nope' in the model"),
    (["--model", "resnet9000"], "Error: unknown model 'resnet9000': use a built-in name"),
    (["--model", "missing.keras"], "Error: model file not found: missing.keras"),
    (["--device", "tpu"], "Error: invalid device 'tpu': use auto, cpu, gpu or gpu:N"),
])
def test_bad_requests_exit_two_with_one_line(photos, model_args, args, message):
    result = run(["gradcam", str(photos / "red.jpg"), *model_args, *args])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message)


def test_asking_for_a_missing_gpu_is_an_error_not_a_cpu_run(photos, model_args, keras):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    result = run(["predict", str(photos / "red.jpg"), *model_args, "--device", "gpu"])
    assert result.exit_code == 2
    assert "asked for a GPU, but TensorFlow sees none" in result.stderr


def test_unwritable_output_folder_fails_before_any_work(photos, tmp_path, model_args):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    result = run(["batch", str(photos), "--out", str(blocker / "out"), *model_args])
    assert result.exit_code == 1
    assert "Error: cannot write to output folder" in result.stderr


def test_models_lists_the_builtins_without_tensorflow():
    code = ("import sys, json; from click.testing import CliRunner; from camcli.cli import main;"
            "r = CliRunner().invoke(main, ['models', '--format', 'json']);"
            "print(json.dumps([json.loads(r.output), 'tensorflow' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rows, imported_tf = json.loads(out.stdout)
    assert not imported_tf
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {"efficientnet-lite0", "resnet50", "vgg16", "mobilenet_v2",
                            "efficientnetb0"}
    assert by_name["efficientnet-lite0"]["default"] and by_name["efficientnet-lite0"]["cam"]
    assert by_name["efficientnet-lite0"]["weights"].startswith("offline")
    assert not by_name["vgg16"]["cam"] and by_name["vgg16"]["layer"] == "block5_conv3"
    table = run(["models"]).stdout.splitlines()
    assert table[1].split()[:3] == ["efficientnet-lite0", "*", "224x224"]


def test_every_command_has_help():
    for name, command in main.commands.items():
        short = command.get_short_help_str(limit=80)
        assert command.help and short.endswith(".") and "et al.)" not in short[:-1], name
        assert run([name, "--help"]).exit_code == 0


def test_help_and_version_do_not_import_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from camcli.cli import main;"
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0;"
            "r = CliRunner().invoke(main, ['batch', '--help']); assert r.exit_code == 0;"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules, 'cv2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_python_dash_m_and_version():
    out = subprocess.run([sys.executable, "-m", "camcli", "--version"], capture_output=True,
                         text=True, cwd=REPO, check=True)
    assert out.stdout.strip().startswith("camcli, version ")


def test_ctrl_c_finishes_in_flight_writes_and_resume_completes(tmp_path, model_args):
    import signal

    from conftest import Paused
    from conftest import write_image as make

    count = 200
    photos = tmp_path / "many"
    for i in range(count):
        make(photos / f"{i:04d}.png", size=(40, 30))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "camcli", "batch", str(photos), "--out", str(out),
               "--batch-size", "4", "-q", *model_args]
    run_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # Paused after its 10th record: Ctrl-C lands mid-run whatever the machine's speed.
    paused = Paused(command, "recorded", 10, tmp_path / "pause", stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True, env=run_env, cwd=REPO)
    paused.wait()
    paused.process.send_signal(signal.SIGINT)
    said = ""
    while "stopping after the images in flight" not in said:  # the handler has run
        line = paused.process.stderr.readline()
        assert line, "the run ended without taking the Ctrl-C"
        said += line
    paused.resume()
    _, err = paused.process.communicate(timeout=300)
    assert paused.process.returncode == 130, err[-2000:]
    assert err.strip().endswith("(interrupted)")
    records = manifest(out)
    written = sorted(p.relative_to(out) for p in out.rglob("*.jpg"))
    # Every record has its file, and only those; the stop came long before the end: at
    # most the images in flight (two batches decoding, twice a batch writing) follow it.
    assert 10 <= len(records) == len(written) <= 10 + 4 * 4
    assert not [p for p in out.iterdir() if p.name.startswith(".camcli-")]

    resumed = run(["batch", str(photos), "--out", str(out), *model_args])
    assert resumed.exit_code == 0
    assert f"{count} inputs: {count - len(records)} written, {len(records)} already done" \
        in resumed.stderr
    assert len(manifest(out)) == count


def test_device_from_the_environment(photos, model_args, monkeypatch):
    monkeypatch.setenv("CAMCLI_DEVICE", "tpu")
    args = [a for a in model_args if a not in ("--device", "cpu")]
    result = run(["predict", str(photos / "red.jpg"), *args])
    assert result.exit_code == 2
    assert "Error: invalid device 'tpu': use auto, cpu, gpu or gpu:N" in result.stderr


def test_unknown_colormap_is_a_usage_error(photos, model_args):
    result = run(["cam", str(photos / "red.jpg"), "--colormap", "rainbowish", *model_args])
    assert result.exit_code == 2
    assert "'rainbowish' is not an OpenCV colour map; choose from" in result.stderr


def test_pattern_selects_files_in_batch(photos, tmp_path, model_args):
    out = tmp_path / "png-only"
    result = run(["batch", str(photos), "--out", str(out), "--pattern", "*.PNG", *model_args])
    assert result.exit_code == 0, result.output
    assert [r["input"] for r in manifest(out)] == [str(photos / "sub" / "green.png")]


def test_h5_model_file(keras, photos, tmp_path):
    path = tmp_path / "legacy.h5"
    gap_model(keras, size=32, classes=3).save(path)
    result = run(["gradcam", str(photos / "red.jpg"), "--model", str(path), "-o",
                  str(tmp_path / "o.jpg"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o.jpg").exists()


def test_explain_any_method_into_a_folder(photos, tmp_path, model_args):
    out = tmp_path / "x"
    for method in ("gradcam++", "eigencam"):
        result = run(["explain", "--method", method, str(photos / "red.jpg"), "--out", str(out),
                      *model_args])
        assert result.exit_code == 0, result.output
        with Image.open(out / f"red_{method}.jpg") as overlay:
            assert overlay.size == (64, 48)
    scored = run(["explain", "--method", "scorecam", "--max-maps", "2", "--scorecam-batch", "3",
                  str(photos / "red.jpg"), "-o", str(tmp_path / "s.jpg"), "-q", *model_args])
    assert scored.exit_code == 0, scored.output
    assert (tmp_path / "s.jpg").exists()


@pytest.mark.parametrize("args, message", [
    (["--method", "gradcam", "--max-maps", "3"],
     "Error: --max-maps applies to the scorecam and ablationcam methods only"),
    (["--method", "scorecam", "--finer-alpha", "0.5"],
     "Error: --finer-alpha and --finer-classes apply to the finercam method only"),
    (["--seed", "3"], "Error: --seed applies to the randomcam method only"),
    (["--kernel", "rbf"], "Error: --kernel applies to the kpcacam method only"),
    (["--method", "eigencam", "--smooth", "eigen"],
     "Error: --smooth eigen does not apply to eigencam: its map is a principal component "
     "already"),
    (["--method", "fullgrad", "--layer", "conv"],
     "Error: fullgrad has no target layer: it uses every convolution's bias and batch "
     "normalisation itself; drop --layer"),
    (["--class-from", "folder", "--class", "1"],
     "Error: give --class (one class for every image) or --class-from (a class per image), "
     "not both"),
    (["--top-k-maps", "2", "-o", "one.jpg"],
     "Error: --top-k-maps writes several files: use --out DIR, not -o"),
])
def test_explain_refuses_conflicting_options(photos, model_args, args, message):
    result = run(["explain", str(photos / "red.jpg"), *args, *model_args])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == message


def test_explain_top_k_maps_names_files_by_rank_and_label(photos, tmp_path, model_args):
    result = run(["explain", "--method", "hirescam", "--top-k-maps", "2", str(photos / "red.jpg"),
                  "--out", str(tmp_path / "k"), *model_args])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "k").iterdir())
    assert len(names) == 2
    assert names[0].startswith("red_hirescam.1-") and names[1].startswith("red_hirescam.2-")
    assert all(n.split("-", 1)[1].removesuffix(".jpg").endswith("_thing") for n in names)


def test_batch_top_k_maps_records_one_row_per_rank_and_resumes(photos, tmp_path, model_args):
    out = tmp_path / "ranked"
    args = ["batch", str(photos / "red.jpg"), str(photos / "sub" / "green.png"), "--out",
            str(out), "--method", "gradcam", "--top-k-maps", "3", "--save-maps", *model_args]
    result = run(args)
    assert result.exit_code == 0, result.output
    rows = manifest(out)
    assert [(os.path.basename(r["input"]), r["rank"]) for r in rows] == [
        ("red.jpg", 1), ("red.jpg", 2), ("red.jpg", 3),
        ("green.png", 1), ("green.png", 2), ("green.png", 3)]
    for row in rows:
        assert row["class_index"] == row["top"][row["rank"] - 1][0]
        assert row["score"] == pytest.approx(row["top"][row["rank"] - 1][2])
        label = row["label"].replace(" ", "_")
        stem = os.path.splitext(os.path.relpath(row["input"], photos))[0]
        assert row["target"] == "top-k"
        assert row["output"] == f"{stem}.{row['rank']}-{label}.jpg"
        assert row["map"] == f"{stem}.{row['rank']}-{label}.npy"
        assert (out / row["output"]).is_file() and (out / row["map"]).is_file()
    maps = [np.load(out / r["map"]) for r in rows[:3]]
    assert not np.allclose(maps[0], maps[1])  # a different class, a different map

    again = run(args)
    assert "2 inputs: 0 written, 2 already done" in again.stderr
    fewer = run([("2" if a == "3" and args[i - 1] == "--top-k-maps" else a)
                 for i, a in enumerate(args)])
    assert "2 inputs: 0 written, 2 already done" in fewer.stderr  # ranks 1-2 are on disk
    plain = run(["batch", str(photos / "red.jpg"), "--out", str(out), *model_args])
    assert "1 inputs: 1 written, 0 already done" in plain.stderr  # a different kind of run


def test_concurrent_shards_share_one_output_folder(tmp_path, model_args):
    photos = tmp_path / "tree"
    for i in range(24):
        write_image(photos / f"c{i % 3}" / f"{i:02d}.jpg", size=(30 + i, 20))
    out = tmp_path / "out"
    processes = [subprocess.Popen([sys.executable, "-m", "camcli", "batch", str(photos), "--out",
                                   str(out), "--shard", f"{k}/3", "-q", *model_args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  cwd=REPO)
                 for k in (1, 2, 3)]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    parts = [out / f"manifest.{k}-of-3.jsonl" for k in (1, 2, 3)]
    assert not (out / "manifest.jsonl").exists()
    inputs = []
    for part in parts:
        with open(part, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]  # every line parses: no interleaving
        assert rows and all(r["error"] is None and (out / r["output"]).is_file() for r in rows)
        inputs += [r["input"] for r in rows]
    assert sorted(inputs) == sorted(str(p) for p in photos.rglob("*.jpg"))  # each exactly once

    again = run(["batch", str(photos), "--out", str(out), "--shard", "2/3", *model_args])
    assert "0 written" in again.stderr and "already done" in again.stderr


@pytest.mark.parametrize("value", ["0/3", "4/3", "3", "a/b"])
def test_bad_shard_is_a_usage_error(tmp_path, model_args, value):
    result = run(["batch", str(tmp_path), "--out", str(tmp_path / "o"), "--shard", value,
                  *model_args])
    assert result.exit_code == 2
    assert "is not K/N with 1 <= K <= N" in result.stderr


#: Where the kills land: after a process's N-th record (the manifest just appended), or
#: while its N-th file is complete under a temporary name and not yet renamed.
KILLS = (("recorded", 7), ("renaming", 5), ("recorded", 3))


def test_sigkill_at_three_points_then_resume(tmp_path, model_files):
    """Killed three times mid-run, at points the test chooses (`KILLS`), then run to
    completion: every input has exactly one complete JPEG and exactly one record; nothing
    recorded was redone; no torn line; no temporary left. The model's two top classes
    always tie, so the picture names and records also hold the one rule for a tie."""
    import signal

    from conftest import TIED, Paused

    count = 60
    model_args = ["--model", model_files["tie"], "--preprocess", "scale01", "--device", "cpu"]

    photos = tmp_path / "many"
    for i in range(count):
        write_image(photos / f"d{i % 7}" / f"{i:04d}.png", size=(40 + i % 9, 30))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "camcli", "batch", str(photos), "--out", str(out),
               "--batch-size", "4", "-q", *model_args]

    def recorded():
        if not (out / "manifest.jsonl").exists():
            return {}
        rows = manifest(out)  # raises if a line is torn
        return {r["input"]: os.stat(out / r["output"]).st_mtime_ns for r in rows}

    previous = {}
    for number, (point, at) in enumerate(KILLS):
        before = len(recorded())
        paused = Paused(command, point, at, tmp_path / f"pause{number}",
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        paused.wait()
        paused.process.send_signal(signal.SIGKILL)
        paused.process.wait()
        snapshot = recorded()
        if point == "recorded":
            assert len(snapshot) == before + at  # only the main thread appends
        else:  # the writer's complete temporary is left behind, never renamed
            pid = paused.process.pid
            assert list(out.rglob(f".camcli-{pid}-*.tmp")), "no temporary at the kill"
            assert len(snapshot) >= before
        for path, stamp in previous.items():
            assert snapshot[path] == stamp, f"{path} was redone"
        previous = snapshot
    assert len(previous) < count  # the kills left work for the last run

    final = run(command[3:])  # the same batch arguments, in-process
    assert final.exit_code == 0, final.output
    rows = manifest(out)
    assert len(rows) == len({r["input"] for r in rows}) == count  # exactly one record each
    for row in rows:
        with Image.open(out / row["output"]) as overlay:
            overlay.load()  # decodes completely
    outputs = {r["input"]: out / r["output"] for r in rows}
    for path, stamp in previous.items():
        assert os.stat(outputs[path]).st_mtime_ns == stamp, f"{path} was redone"
    assert not [p for p in out.rglob(".camcli-*")]  # the killed runs' temporaries are gone
    assert {r["class_index"] for r in rows} == {TIED[0]}  # a tie: the lower index, always
    again = run(command[3:])
    assert f"{count} inputs: 0 written, {count} already done" in again.stderr
    assert len(manifest(out)) == count


def test_batch_metrics_are_recorded_and_summarised(photos, tmp_path, model_args):
    out = tmp_path / "m"
    result = run(["batch", str(photos / "red.jpg"), str(photos / "sub" / "green.png"), "--out",
                  str(out), "--metrics", "--metric-steps", "4", *model_args])
    assert result.exit_code == 0, result.output
    for row in manifest(out):
        assert set(row["metrics"]) == {"deletion_auc", "insertion_auc", "average_drop",
                                       "increase"}
        assert 0.0 <= row["metrics"]["deletion_auc"] <= 1.0
        assert 0.0 <= row["metrics"]["average_drop"] <= 100.0
    assert "camcli: metrics over 2 images: deletion AUC " in result.stderr
    assert "increase in confidence" in result.stderr
    run(["batch", str(photos / "red.jpg"), "--out", str(tmp_path / "p"), *model_args])
    assert manifest(tmp_path / "p")[0]["metrics"] is None


@pytest.mark.parametrize("kind, keys", [
    ("road", {"road_morf", "road_lerf", "road_combined"}),
    ("all", {"road_morf", "road_lerf", "road_combined", "deletion_auc", "insertion_auc",
             "average_drop", "increase"})])
def test_batch_road_metrics_are_recorded_and_summarised(photos, tmp_path, model_args, kind,
                                                        keys):
    out = tmp_path / kind
    result = run(["batch", str(photos / "red.jpg"), "--metrics", kind, "--metric-steps", "2",
                  "--out", str(out), *model_args])
    assert result.exit_code == 0, result.output
    metrics = manifest(out)[0]["metrics"]
    assert set(metrics) == keys
    assert metrics["road_combined"] == pytest.approx(
        (metrics["road_lerf"] - metrics["road_morf"]) / 2, abs=2e-6)
    assert "camcli: metrics over 1 images: " in result.stderr
    assert "ROAD MoRF " in result.stderr and "combined " in result.stderr
    assert ("deletion AUC" in result.stderr) == (kind == "all")


def test_batch_metrics_names_its_kinds(photos, tmp_path, model_args):
    result = run(["batch", "--metrics", str(photos), "--out", str(tmp_path / "x"),
                  *model_args])
    assert result.exit_code == 2
    assert "Invalid value for '--metrics'" in result.stderr
    assert "'faithfulness', 'road', 'all'" in result.stderr


def test_panel_output(photos, tmp_path, model_args):
    target = tmp_path / "panel.jpg"
    result = run(["explain", "--method", "layercam", str(photos / "red.jpg"), "--panel", "-o",
                  str(target), *model_args])
    assert result.exit_code == 0, result.output
    with Image.open(target) as picture:
        assert picture.size[0] == 3 * 64 and picture.size[1] > 48


def test_a_full_disk_stops_the_single_image_commands_too(photos, tmp_path, model_args,
                                                         monkeypatch):
    import errno

    from camcli.io import atomic

    real, written = atomic.write_atomic, []

    def filling_up(path, data):
        if written:  # the first picture fits, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        real(path, data)

    monkeypatch.setattr(atomic, "write_atomic", filling_up)
    out = tmp_path / "pictures"
    result = run(["gradcam", str(photos / "red.jpg"), str(photos / "sub" / "green.png"),
                  str(photos / "sub" / "deeper" / "blue.jpeg"), "--out", str(out),
                  *model_args])
    assert result.exit_code == 1
    assert result.stdout.count("\n") == 1  # the one picture written, then the stop
    folder = (out / "sub").resolve()
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: cannot write to {folder}: No space left on device")
    assert [p.name for p in out.rglob("*.jpg")] == ["red_gradcam.jpg"]


def test_batch_records_the_settings_and_reruns_when_they_change(photos, tmp_path, model_args):
    out = tmp_path / "finer"
    args = ["batch", str(photos / "red.jpg"), "--out", str(out), "--method", "finercam",
            "--finer-classes", "2", *model_args]
    first = run([*args, "--smooth", "aug"])
    assert first.exit_code == 0, first.output
    assert [r["settings"] for r in manifest(out)] == ["smooth=aug,finer_classes=2"]
    again = run([*args, "--smooth", "aug"])
    assert "1 inputs: 0 written, 1 already done, 0 failed" in again.stderr
    changed = run(args)  # no smoothing: another request
    assert "1 inputs: 1 written, 0 already done, 0 failed" in changed.stderr
    assert [r["settings"] for r in manifest(out)] == ["smooth=aug,finer_classes=2",
                                                      "finer_classes=2"]


@pytest.mark.parametrize("method", ["ablationcam", "fullgrad", "kpcacam", "shapleycam",
                                    "randomcam"])
def test_batch_runs_each_new_method_end_to_end(photos, tmp_path, model_args, method):
    out = tmp_path / method
    result = run(["batch", str(photos / "red.jpg"), str(photos / "sub" / "green.png"),
                  "--out", str(out), "--method", method, *model_args])
    assert result.exit_code == 0, result.output
    rows = manifest(out)
    assert [r["method"] for r in rows] == [method, method]
    for row in rows:
        with Image.open(out / row["output"]) as picture:
            assert picture.format == "JPEG"
    if method == "fullgrad":
        assert rows[0]["layer"] == "conv"  # its bias layers: the tiny model has one

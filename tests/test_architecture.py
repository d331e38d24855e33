"""The layers hold where it matters to a user: what reads a run's records (score, audit,
report) loads no model code and no TensorFlow, so it starts fast and runs where no model
is installed. import-linter checks every import statement (`make test`, pyproject's
contracts); these tests check what a real import loads, lazily imported modules included.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Modules that mean "model code" or a deep-learning framework.
HEAVY = ("camcli.compute", "camcli.run", "tensorflow", "keras", "keras_hub", "ray")


def loaded_by(statement: str) -> list[str]:
    """The modules a fresh interpreter has loaded after ``statement``."""
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_the_records_load_no_method_no_model_and_no_tensorflow():
    modules = loaded_by("import camcli.records.manifest")
    assert "camcli.records.manifest" in modules
    assert heavy(modules) == []


@pytest.mark.parametrize("module", ["camcli.analysis.score", "camcli.analysis.audit",
                                    "camcli.analysis.report", "camcli.analysis.metrics"])
def test_the_analysis_loads_no_model_code(module):
    modules = loaded_by(f"import {module}")
    assert module in modules
    assert heavy(modules) == []


def test_a_finished_runs_analysis_runs_without_the_compute_layer(tmp_path):
    """``score`` and ``audit`` on a real run's records and maps, in an interpreter where
    importing camcli.compute or TensorFlow fails: they never need it."""
    from conftest import write_image

    photo = write_image(tmp_path / "tree" / "a.png", size=(40, 30))
    out = tmp_path / "out"
    out.mkdir()
    import numpy as np

    heatmap = np.zeros((4, 4), np.float32)
    heatmap[1, 1] = 1.0
    np.save(out / "a.npy", heatmap)
    record = {"schema": 2, "input": str(photo), "output": "a.jpg", "map": "a.npy",
              "model": "m", "layer": "conv", "method": "gradcam", "target": "top1",
              "class_index": 0, "label": "zero", "score": 0.9, "top": [[0, "zero", 0.9]],
              "peak": [12, 9], "time": "2026-01-01T00:00:00.000Z"}
    (out / "manifest.jsonl").write_text(json.dumps(record) + "\n")
    (tmp_path / "truth.csv").write_text("input,class,x0,y0,x1,y1\na.png,zero,5,5,20,15\n")
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               f"        if name.split('.')[0] in {HEAVY[2:]!r} or name in {HEAVY[:2]!r}:\n"
               "            raise ImportError('blocked: ' + name)\n"
               "sys.meta_path.insert(0, Block())\n")
    code = (blocker + "from camcli.analysis.score import score\n"
            "from camcli.options import ScoreOptions\n"
            f"s = score([{str(out)!r}], ScoreOptions({str(tmp_path / 'truth.csv')!r}))\n"
            "print(s.overall.rates()['pointing'], s.overall.rates()['mapped'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1.0", "1"]  # the peak (12, 9) is in the box; one map

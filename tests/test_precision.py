"""--precision: bf16 maps agree with fp32 maps; auto picks per machine."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLES

from camcli.compute import backend
from camcli.compute.models import load
from camcli.errors import DeviceError
from camcli.io.inputs import discover
from camcli.options import ExplainRequest
from camcli.run.session import Session


def explain_samples(loaded, precision: str, method: str):
    session = Session.create(loaded("efficientnet-lite0", precision),
                             ExplainRequest(method=method))
    photos = sorted(str(p) for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
    return {r.input.relative: r for r in session.stream(discover(photos))}


@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_bf16_maps_correlate_with_fp32_and_top1_agrees(loaded, method):
    full, half = explain_samples(loaded, "fp32", method), explain_samples(loaded, "bf16", method)
    assert set(full) == set(half) and len(full) == 6
    for name in full:
        (got,), (want,) = half[name].maps, full[name].maps
        assert got.class_index == want.class_index, name
        correlation = np.corrcoef(want.heatmap.ravel(), got.heatmap.ravel())[0, 1]
        assert correlation >= 0.99, (name, correlation)
        assert got.heatmap.dtype == np.float32


def test_bf16_really_computes_in_bf16():
    loaded = load("efficientnet-lite0")
    backend.apply_precision(loaded.model, "bf16")
    assert loaded.model.get_layer("top_conv").compute_dtype == "bfloat16"
    assert loaded.model.get_layer("top_conv").kernel.dtype == "float32"  # variables stay fp32


def test_auto_precision(monkeypatch):
    assert backend.resolve_precision("auto", "/GPU:0") == "fp16"
    monkeypatch.setattr(backend, "cpu_has_fast_bf16", lambda: True)
    assert backend.resolve_precision("auto", "/CPU:0") == "bf16"
    monkeypatch.setattr(backend, "cpu_has_fast_bf16", lambda: False)
    assert backend.resolve_precision("auto", "/CPU:0") == "fp32"
    assert backend.resolve_precision("fp16", "/CPU:0") == "fp16"
    with pytest.raises(DeviceError, match="unknown precision 'fp8'"):
        backend.resolve_precision("fp8", "/CPU:0")

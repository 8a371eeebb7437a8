"""Engine selection: explicit backends never substitute silently; auto logs its fallbacks."""

import logging
import sys

import numpy as np
import pytest

from hsi_xai_node.runtime import EngineError, open_engine
from hsi_xai_node.runtime import engine as engine_module
from test.test_model_card import tiny_segmenter


@pytest.fixture
def tiny_bytes(tmp_path):
    tiny_segmenter(tmp_path / "t.onnx")
    return (tmp_path / "t.onnx").read_bytes()


def test_auto_falls_back_to_cpu_and_says_why_once(tiny_bytes, caplog, monkeypatch):
    monkeypatch.setattr(engine_module, "_said", set())  # as in a fresh process
    monkeypatch.setitem(sys.modules, "openvino", None)  # a machine without OpenVINO: importing it fails
    caplog.set_level(logging.INFO, logger="hsi_xai_node.runtime.engine")
    engine = open_engine(tiny_bytes, "auto")
    assert engine.backend == "ort-cpu"
    (first,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    text = first.getMessage()
    assert text.startswith("backend auto: using ort-cpu, fp32 (precision fp16 applies to TensorRT and OpenVINO GPUs "
                           "only)")
    assert "tensorrt" in text and "ort-trt" in text and "ort-cuda" in text and "openvino: OpenVINO is not installed" in text
    caplog.clear()
    for _ in range(2):  # every later engine of the process meets the same fall-back: not said again
        assert open_engine(tiny_bytes, "auto").backend == "ort-cpu"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_named_cpu_backend_says_nothing_about_fp16(tiny_bytes, caplog):
    caplog.set_level(logging.DEBUG, logger="hsi_xai_node.runtime.engine")
    assert open_engine(tiny_bytes, "ort-cpu", precision="fp16").backend == "ort-cpu"
    assert "fp16" not in caplog.text and "fall" not in caplog.text


def test_explicit_backend_is_that_backend_or_an_error(tiny_bytes):
    with pytest.raises(EngineError, match="ort-cuda: this ONNX Runtime has no CUDAExecutionProvider"):
        open_engine(tiny_bytes, "ort-cuda")
    with pytest.raises(EngineError, match="unknown backend 'cuda'"):
        open_engine(tiny_bytes, "cuda")
    with pytest.raises(EngineError, match="unknown precision 'int8'"):
        open_engine(tiny_bytes, "ort-cpu", precision="int8")


def test_names_shapes_and_run(tiny_bytes):
    import onnxruntime as ort
    engine = open_engine(tiny_bytes, "ort-cpu", precision="fp32")
    assert engine.inputs["input"].shape == (1, 3, 16, 32) and engine.inputs["input"].dtype == np.float32
    assert list(engine.outputs) == ["logits"]
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 32)).astype(np.float32)
    ref = ort.InferenceSession(tiny_bytes, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(engine.run({"input": x})["logits"], ref, rtol=1e-5, atol=1e-5)  # ORT levels differ
    with pytest.raises(EngineError, match=r"input 'input': shape \(1, 3, 16, 31\), engine expects \(1, 3, 16, 32\)"):
        engine.run({"input": x[..., :31]})
    with pytest.raises(EngineError, match=r"has no output\(s\) \['probs'\]"):
        engine.run({"input": x}, ["probs"])
    with pytest.raises(EngineError, match=r"needs input\(s\) \['input'\]"):
        engine.run({})

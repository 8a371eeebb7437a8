"""Engine selection: explicit backends never substitute silently; auto logs its fallbacks."""

import logging

import numpy as np
import pytest

from hsi_xai_node.runtime import EngineError, open_engine
from test.test_model_card import tiny_segmenter


@pytest.fixture
def tiny_bytes(tmp_path):
    tiny_segmenter(tmp_path / "t.onnx")
    return (tmp_path / "t.onnx").read_bytes()


def test_auto_falls_back_to_cpu_and_logs_why(tiny_bytes, caplog):
    caplog.set_level(logging.INFO, logger="hsi_xai_node.runtime.engine")
    engine = open_engine(tiny_bytes, "auto")
    assert engine.backend == "ort-cpu"
    text = caplog.text
    assert "tensorrt" in text and "ort-cuda" in text and "using backend ort-cpu" in text


def test_explicit_backend_is_that_backend_or_an_error(tiny_bytes):
    with pytest.raises(EngineError, match="ort-cuda: ONNX Runtime here has no CUDAExecutionProvider"):
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

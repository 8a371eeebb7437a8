"""Engine selection: explicit backends never substitute silently; auto measures the engines here, keeps the
fastest and remembers it; every engine holds only the outputs its caller reads."""

import json
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


def _two_backends():
    pytest.importorskip("openvino", reason="auto chooses between engines: needs OpenVINO beside ONNX Runtime CPU")


def test_auto_measures_every_engine_here_and_keeps_the_fastest(tiny_bytes, tmp_path, caplog):
    _two_backends()
    caplog.set_level(logging.INFO, logger="hsi_xai_node.runtime.engine")
    engine = open_engine(tiny_bytes, "auto", cache_dir=tmp_path)
    choice = engine.choice
    assert set(choice.times_ms) == {"openvino", "ort-cpu"} and all(t > 0 for t in choice.times_ms.values())
    assert engine.backend == choice.backend == min(choice.times_ms, key=choice.times_ms.get)
    assert not choice.cached and "tensorrt" in choice.reasons
    assert f"auto: {engine.backend}, the fastest engine call here" in engine.describe_backend()
    assert "the fastest engine call here" in caplog.text  # the figures are logged
    (cached,) = (tmp_path / "auto").glob("*.json")
    record = json.loads(cached.read_text())
    assert record["backend"] == engine.backend and record["times_ms"] == choice.times_ms
    machine = record["machine"]  # what the choice was measured on
    assert machine["cores"] >= 1 and machine["cpu"] and "onnxruntime" in machine["versions"]
    assert machine["instruction_sets"] == sorted(machine["instruction_sets"])


def test_auto_reads_its_choice_back_and_measures_again_when_it_cannot(tiny_bytes, tmp_path, caplog):
    _two_backends()
    first = open_engine(tiny_bytes, "auto", cache_dir=tmp_path)
    (path,) = (tmp_path / "auto").glob("*.json")
    again = open_engine(tiny_bytes, "auto", cache_dir=tmp_path)
    assert again.choice.cached and again.backend == first.backend and again.choice.times_ms == first.choice.times_ms
    # the cache decides, not a fixed order: a record naming the other engine is followed as it is
    record = json.loads(path.read_text())
    other = next(b for b in record["times_ms"] if b != first.backend)
    path.write_text(json.dumps({**record, "backend": other}))
    assert open_engine(tiny_bytes, "auto", cache_dir=tmp_path).backend == other
    # another graph, other outputs or other threads are other choices
    assert open_engine(tiny_bytes, "auto", cache_dir=tmp_path, threads=1).choice.cached is False
    # a damaged, foreign or oversized record is measured over, never trusted or raised
    for bad in (b"{", json.dumps({**record, "backend": "cuda"}).encode(), b"[" * 100_000,
                json.dumps({**record, "key": "0" * 64}).encode(), b" " * 70_000):
        path.write_bytes(bad)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hsi_xai_node.runtime.backend_choice"):
            e = open_engine(tiny_bytes, "auto", cache_dir=tmp_path)
        assert not e.choice.cached and "unusable" in caplog.text, bad[:20]
        assert json.loads(path.read_text())["backend"] == e.backend  # measured and written anew


def test_a_named_backend_is_not_measured_or_cached(tiny_bytes, tmp_path):
    engine = open_engine(tiny_bytes, "ort-cpu", cache_dir=tmp_path)
    assert engine.choice is None and engine.describe_backend() == "ort-cpu (named in the configuration)"
    assert not (tmp_path / "auto").exists()


def test_only_the_outputs_read_are_in_the_engine(tiny_bytes):
    """Pruned for every backend: ONNX Runtime would run every node whatever is fetched."""
    import onnx
    from onnx import helper

    model = onnx.load_model_from_string(tiny_bytes)
    model.graph.node.append(helper.make_node("Sigmoid", ["dec1"], ["unread"]))
    model.graph.output.append(helper.make_empty_tensor_value_info("unread"))
    data = model.SerializeToString()
    assert set(open_engine(data, "ort-cpu").outputs) == {"logits", "unread"}
    engine = open_engine(data, "ort-cpu", outputs_to_copy=["logits"])
    assert list(engine.outputs) == ["logits"]
    pruned = onnx.load_model_from_string(engine_module.only_outputs(data, ["logits"]))
    assert [n.op_type for n in pruned.graph.node] == ["Conv", "Relu", "Conv"]  # the Sigmoid is gone
    assert engine_module.only_outputs(tiny_bytes, ["logits"]) is tiny_bytes  # nothing to drop: the same bytes
    with pytest.raises(EngineError, match=r"no output\(s\) \['nothing'\]"):
        open_engine(data, "ort-cpu", outputs_to_copy=["nothing"])


def test_gpu_providers_of_onnx_runtime_run_ieee_float32(tiny_bytes):
    """ONNX Runtime's CUDA provider computes float32 convolutions in TF32 on Ampere and newer GPUs unless `use_tf32`
    is 0 (its default is 1 since 1.18); measured on an H200 that moved input attributions by 1-5% (BENCHMARKS.md).
    The list is of the form ONNX Runtime's own API takes: a CPU-only build loads it, warning that the CUDA provider
    is missing, and runs on the CPU; a GPU build reports the option back."""
    import onnxruntime as ort

    assert engine_module.ort_providers("ort-cuda") == [("CUDAExecutionProvider", {"use_tf32": "0"}),
                                                       "CPUExecutionProvider"]
    assert engine_module.ort_providers("ort-cpu") == [("CPUExecutionProvider", {})]
    assert engine_module.ort_providers("ort-trt")[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" in ort.get_available_providers():  # a GPU build: the session holds the option
        session = ort.InferenceSession(tiny_bytes, providers=engine_module.ort_providers("ort-cuda"))
        assert session.get_provider_options()["CUDAExecutionProvider"]["use_tf32"] == "0"
        return
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        session = ort.InferenceSession(tiny_bytes, providers=engine_module.ort_providers("ort-cuda"))
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_ort_trt_says_once_that_it_cannot_turn_tf32_off(tiny_bytes, caplog, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(engine_module, "_said", set())
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    with caplog.at_level(logging.DEBUG, logger="hsi_xai_node.runtime.engine"), pytest.warns(UserWarning):
        for _ in range(2):
            open_engine(tiny_bytes, "ort-trt")  # this ONNX Runtime has no TensorRT: it warns and runs on the CPU
    said = [r for r in caplog.records if "TF32" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING, logging.DEBUG]
    assert "backend tensorrt builds IEEE float32" in said[0].getMessage()


def test_input_attributions_on_an_fp16_engine_are_said_to_be_off_float32(caplog, monkeypatch):
    """An FP16 forward moved the input attributions by 1-8% on an H200 (bench/gpu_graphs.py); OpenVINO's fp16 runs
    the explanations in FP16 too, where DeepLIFT came out NaN. Said once, and only where FP16 runs."""
    from types import SimpleNamespace

    monkeypatch.setattr(engine_module, "_said", set())
    trt, ort_cpu = SimpleNamespace(backend="tensorrt"), SimpleNamespace(backend="ort-cpu")
    ov_gpu, ov_cpu = SimpleNamespace(backend="openvino", device="GPU.1"), SimpleNamespace(backend="openvino", device="CPU")
    auto_cpu = SimpleNamespace(backend="openvino", device="AUTO", execution_devices=["CPU"])  # what AUTO picked
    auto_gpu = SimpleNamespace(backend="openvino", device="AUTO", execution_devices=["GPU.0"])
    fp16 = [engine_module.computes_in_fp16(e, "fp16") for e in (trt, ov_gpu, ov_cpu, ort_cpu, auto_cpu, auto_gpu)]
    assert fp16 == [True, True, False, False, False, True]
    assert not engine_module.computes_in_fp16(trt, "fp32")
    with caplog.at_level(logging.WARNING, logger="hsi_xai_node.runtime.engine"):
        engine_module.warn_fp16_attributions(ort_cpu, "fp16", ["deeplift"])
        engine_module.warn_fp16_attributions(trt, "fp32", ["deeplift"])
        engine_module.warn_fp16_attributions(trt, "fp16", [])  # CAMs only: nothing to say
        assert not caplog.records
        engine_module.warn_fp16_attributions(trt, "fp16", ["gradient", "deeplift", "gradient"])
        engine_module.warn_fp16_attributions(trt, "fp16", ["gradient", "deeplift"])
        engine_module.warn_fp16_attributions(ov_gpu, "fp16", ["deeplift"])
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "(deeplift, gradient)" in said[0] and "NaN" not in said[0] and "NaN" in said[1]


def test_each_engine_says_what_it_computes_in(tiny_bytes):
    """/diagnostics and the replay summary report it beside the backend: what the maps were computed in."""
    from types import SimpleNamespace

    assert open_engine(tiny_bytes, "ort-cpu").arithmetic == "IEEE float32"
    assert open_engine(tiny_bytes, "auto").arithmetic == "IEEE float32"  # ONNX Runtime or OpenVINO on the CPU
    trt = SimpleNamespace(backend="tensorrt")
    assert engine_module.arithmetic(trt, "fp32") == "IEEE float32 (TF32 off)"
    assert engine_module.arithmetic(trt, "fp16").startswith("FP16 forward where the GPU has fast FP16; FP32 explanations")
    assert "TF32 convolutions" in engine_module.arithmetic(SimpleNamespace(backend="ort-trt"), "fp32")
    assert engine_module.arithmetic(SimpleNamespace(backend="openvino", device="GPU"), "fp16") == "FP16 throughout (OpenVINO)"
    assert engine_module.arithmetic(SimpleNamespace(backend="openvino", device="CPU"), "fp16") == "IEEE float32"

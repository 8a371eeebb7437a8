"""The OpenVINO backend against ONNX Runtime on every kind of graph the project builds: the same outputs
within stated tolerances, the same errors for bad input, one clear error for a graph it cannot read."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hsi_xai_node.explain import SegmentationExplainConfig, build_segmentation_explainer
from hsi_xai_node.runtime import EngineError, open_engine
from test.conftest import BUNDLED_UNET, bundled_unet_input
from test.runtime.agreement import UINT8_SHARE, assert_agree, assert_within, bounds

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install -e '.[openvino]')")

def compare(eg, feeds: dict, a: dict, b: dict, argmax_of: str | None = None) -> None:
    """Both engines' outputs of explain graph `eg` agree within the rounding the graph's own arithmetic allows
    (agreement.py); its predicted-class output is compared as class indices."""
    labels = {n for n, o in eg.outputs.items() if o.method == "argmax"}
    assert_agree(a, b, bounds(eg.model, feeds, list(a)), argmax_of, labels)


@pytest.fixture(scope="module")
def bundled(hsi_drive):
    return bundled_unet_input(hsi_drive)


@pytest.mark.parametrize("layer", ["penultimate", "bottleneck"])
def test_every_segmentation_method_matches_onnx_runtime(bundled, layer):
    loaded, x = bundled
    card = loaded.card
    methods = ("activation", "seg_gradcam", "seg_gradcam_signed", "hires", "gradcam_pp", "xgradcam", "layercam",
               "seg_xres", "eigencam", "spectral") + (("scorecam",) if layer == "penultimate" else ())
    eg = build_segmentation_explainer(onnx.load_model_from_string(loaded.onnx_bytes), card.input.tensor, card.logits,
                                      card.layers, SegmentationExplainConfig(methods=methods, layers=(layer,)))
    data = eg.model.SerializeToString()
    ort, ov = open_engine(data, "ort-cpu", threads=2), open_engine(data, "openvino", threads=2)
    assert ov.backend == "openvino" and set(ov.outputs) == set(ort.outputs)
    assert all(ov.outputs[k].shape == ort.outputs[k].shape for k in ort.outputs)
    feeds = {card.input.tensor: x}
    compare(eg, feeds, ort.run(feeds), ov.run(feeds), argmax_of=card.logits)


def test_detector_with_per_box_maps_matches_onnx_runtime():
    from hsi_xai_node.runtime.detection import DetectionPipeline, DetectionPipelineConfig
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.calibration import load_profile

    images = {n: c.image for n, c in DriveGenerator(load_profile("hsi-drive"), seed=3005, render_hsi=False)
              .frame(20).cameras.items()}
    results, pipelines = {}, {}
    for backend in ("ort-cpu", "openvino"):
        p = DetectionPipeline(DetectionPipelineConfig(backend=backend, threads=2, box_maps=True, overlay_scale="frame",
                                                      methods=("box_gradcam", "box_gradcam_pp", "box_spectral")))
        assert p.engine.backend == backend
        results[backend], pipelines[backend] = p.process(images), p
    a, b = results["ort-cpu"], results["openvino"]
    assert len(a.detections) == len(b.detections) > 0
    for da, db in zip(a.detections, b.detections):
        assert da.class_name == db.class_name and da.score == pytest.approx(db.score, abs=1e-4)
        np.testing.assert_allclose(da.box, db.box, atol=1e-2)
        assert (da.camera_shares is None) == (db.camera_shares is None)  # shares of the explained boxes only
        for cam in da.camera_shares or {}:
            assert da.camera_shares[cam] == pytest.approx(db.camera_shares[cam], abs=1e-3)
    p, card = pipelines["ort-cpu"], pipelines["ort-cpu"].card
    x = p.frontend.stack(p.frontend.register_all(images))
    if card.input.layout == "nhwc":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    maps = p._plan["maps"]
    assert_within(a.box_maps, b.box_maps, bounds(p.graph.model, {card.input.tensor: x}, [maps])[maps][:, 0], maps)


def test_whole_pipeline_and_in_graph_pipeline_match(hsi_drive):
    from hsi_xai_node.runtime import Pipeline, PipelineConfig
    from hsi_xai_node.runtime.ingraph import InGraphPipeline
    from hsi_xai_node.scenes.drive import DriveGenerator

    if not BUNDLED_UNET.exists():
        pytest.skip("no bundled model")
    gen = DriveGenerator(hsi_drive, seed=2002, render_cameras=False)
    dark, white = gen.references()
    raw = gen.frame(10).raw
    out, pipelines = {}, {}
    for backend in ("ort-cpu", "openvino"):
        p = pipelines[backend] = Pipeline(PipelineConfig(backend=backend, threads=2, class_maps=True), dark, white)
        out[backend] = (p.process(raw), InGraphPipeline(p, "uint16", backend=backend).process(raw))
    (a, ga), (b, gb) = out["ort-cpu"], out["openvino"]
    assert (a.labels == b.labels).mean() >= 0.9999 and (ga.labels == gb.labels).mean() >= 0.9999
    p = pipelines["ort-cpu"]
    feeds = {p.card.input.tensor: p.card.model_input(p.frontend.process(raw).cube.data), **p.scale_feeds()}
    allowed = bounds(p.graph.model, feeds, [p._plan[k] for k in a.class_maps])
    for k in a.class_maps:
        assert_within(a.class_maps[k], b.class_maps[k], allowed[p._plan[k]][:, 0], k)
    for img in ("gradcam_overlay", "activation_overlay"):
        diff = np.abs(getattr(a, img).astype(int) - getattr(b, img).astype(int))
        assert (diff > 2).mean() <= UINT8_SHARE, img
    np.testing.assert_allclose(a.residuals["activation"], b.residuals["activation"], atol=1e-3)


def test_bad_input_gives_the_same_errors(bundled):
    loaded, x = bundled
    errors = []
    for backend in ("ort-cpu", "openvino"):
        engine = open_engine(loaded.onnx_bytes, backend, threads=1)
        with pytest.raises(EngineError) as shape:
            engine.run({loaded.card.input.tensor: x[..., :-1]})
        with pytest.raises(EngineError) as name:
            engine.run({loaded.card.input.tensor: x}, ["nothing"])
        with pytest.raises(EngineError) as missing:
            engine.run({})
        errors.append([str(e.value).replace(backend, "BACKEND") for e in (shape, name, missing)])
    assert errors[0] == errors[1]


def test_a_graph_it_cannot_read_names_the_node():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    node = helper.make_node("FooBar", ["x"], ["y"], name="my_foo", domain="com.example")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(EngineError, match=r"openvino: cannot read the graph: .*FooBar.*\(op com.example.FooBar at "
                                          r"node\(s\) my_foo\)"):
        open_engine(model.SerializeToString(), "openvino")


def test_unknown_or_absent_device_is_an_error(bundled):
    loaded, _ = bundled
    with pytest.raises(EngineError, match="unknown device 'TPU'"):
        open_engine(loaded.onnx_bytes, "openvino", device="TPU")
    import openvino as ov

    if "NPU" not in ov.Core().available_devices:
        with pytest.raises(EngineError, match="no NPU device here"):
            open_engine(loaded.onnx_bytes, "openvino", device="NPU")


def test_compiled_models_are_cached(bundled, tmp_path):
    loaded, x = bundled
    open_engine(loaded.onnx_bytes, "openvino", cache_dir=tmp_path)
    blobs = list((tmp_path / "openvino").glob("*.blob"))
    assert blobs, list((tmp_path / "openvino").iterdir())
    again = open_engine(loaded.onnx_bytes, "openvino", cache_dir=tmp_path)  # from the cache
    assert list((tmp_path / "openvino").glob("*.blob")) == blobs
    assert again.run({loaded.card.input.tensor: x})[loaded.card.logits].shape == loaded.card.input.shape[:1] + (5,) \
        + loaded.card.input.shape[2:]


def test_only_the_outputs_to_copy_are_compiled(bundled):
    loaded, x = bundled
    card = loaded.card
    eg = build_segmentation_explainer(onnx.load_model_from_string(loaded.onnx_bytes), card.input.tensor, card.logits,
                                      card.layers, SegmentationExplainConfig(methods=("activation", "hires")))
    data = eg.model.SerializeToString()
    wanted = [card.logits, next(n for n, o in eg.outputs.items() if o.method.startswith("hires") and o.dtype == "uint8")]
    ov = open_engine(data, "openvino", outputs_to_copy=wanted)
    assert sorted(ov.outputs) == sorted(wanted)
    feeds = {card.input.tensor: x}
    compare(eg, feeds, open_engine(data, "ort-cpu").run(feeds, wanted), ov.run(feeds))
    with pytest.raises(EngineError, match=r"no output\(s\) \['nothing'\]"):
        open_engine(data, "openvino", outputs_to_copy=["nothing"])


def test_auto_computes_in_f32_on_the_cpu(bundled):
    """OpenVINO's CPU plugin defaults to bf16 on CPUs with AVX512_BF16 or AMX: there the bundled U-Net's logits came
    out 1.4e-2 of their peak from f32 (the development VM's EPYC). AUTO, which set no precision, ran so. Each device
    AUTO may pick now gets its own settings, and on the CPU the outputs agree with ONNX Runtime's as the CPU
    device's do (on a CPU without bf16 this only checks the agreement)."""
    from hsi_xai_node.runtime.openvino_backend import device_config

    config = device_config("AUTO", "fp16", threads=2)["DEVICE_PROPERTIES"]
    assert config["CPU"]["INFERENCE_PRECISION_HINT"] == "f32" and config["CPU"]["INFERENCE_NUM_THREADS"] == 2
    assert config["GPU"]["INFERENCE_PRECISION_HINT"] == config["NPU"]["INFERENCE_PRECISION_HINT"] == "f16"
    assert device_config("AUTO", "fp32")["DEVICE_PROPERTIES"]["GPU"]["INFERENCE_PRECISION_HINT"] == "f32"
    loaded, x = bundled
    card = loaded.card
    eg = build_segmentation_explainer(onnx.load_model_from_string(loaded.onnx_bytes), card.input.tensor, card.logits,
                                      card.layers, SegmentationExplainConfig(methods=("activation", "seg_gradcam")))
    data = eg.model.SerializeToString()
    feeds = {card.input.tensor: x}
    compare(eg, feeds, open_engine(data, "ort-cpu", threads=2).run(feeds),
            open_engine(data, "openvino", threads=2, device="AUTO").run(feeds), argmax_of=card.logits)


def test_inputs_are_read_in_place_and_outputs_are_the_callers(bundled):
    """The engine reads its inputs where they are (share_inputs): a non-contiguous or float64 input is still made
    contiguous float32 first, the caller's array is left as it was, and each call's outputs are the caller's own
    copies, not views the next call overwrites. ONNX Runtime on the same inputs is the reference, within the
    rounding the graph's arithmetic allows (agreement.py)."""
    loaded, x = bundled
    name, logits = loaded.card.input.tensor, loaded.card.logits
    model = onnx.load_model_from_string(loaded.onnx_bytes)
    ov, ort_ = open_engine(loaded.onnx_bytes, "openvino", threads=1), open_engine(loaded.onnx_bytes, "ort-cpu", threads=1)
    other = np.ascontiguousarray(x[..., ::-1])  # the frame mirrored: other logits
    kept = x.copy()
    first = ov.run({name: x})[logits]
    second = ov.run({name: x[..., ::-1].astype(np.float64)})[logits]  # strided and float64: converted, then shared
    assert np.array_equal(x, kept)
    ref_first, allowed = ort_.run({name: x})[logits], bounds(model, {name: x}, [logits])[logits]
    ref_second = ort_.run({name: other})[logits]
    assert_within(ref_first, first, allowed, logits)
    assert_within(ref_second, second, bounds(model, {name: other}, [logits])[logits], logits)
    # the two frames' logits differ by more than the rounding allows: the first call's outputs, checked after the
    # second call, would have failed above had the second overwritten them
    assert (np.abs(ref_first - ref_second) > allowed).any()

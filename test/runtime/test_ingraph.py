"""The in-graph pipeline (raw mosaic -> uint8 images in one ONNX graph) against the CPU `Pipeline`.

Tolerance: none. On a generated frame (with a saturated patch), labels, segmentation, the
false-colour preview and both fused overlays from ONNX Runtime CPU are compared for exact
equality with `Pipeline.process`, for both raw dtypes; a failure message gives, per image, the
largest difference and the fraction of pixels that differ at all.
"""

import json

import numpy as np
import onnx
import pytest

from hsi_xai_node.errors import FrameError, InputError
from hsi_xai_node.explain._trt_check import check_tensorrt
from hsi_xai_node.runtime import Pipeline, PipelineConfig
from hsi_xai_node.runtime.ingraph import InGraphPipeline, build_ingraph_pipeline
from hsi_xai_node.scenes.drive import DriveGenerator
from test.conftest import REPO

IMAGES = ("labels", "segmentation", "preview", "gradcam_overlay", "activation_overlay")
CASES = {  # id -> (model, config changes[, card input changes: the normalisations imported models bring])
    "3-bands": ("unet_bundled_3", {}),
    "3-bands-max": ("unet_bundled_3", {}, {"normalise": "max", "scale": 2.0}),
    "3-bands-mean-std": ("unet_bundled_3", {}, {"normalise": "mean_std", "mean": [0.3, 0.25, 0.2],
                                                "std": [0.1, 0.12, 0.3]}),
    "25-bands-pn": ("unet_bundled_25pn", {}),
    "25-bands-pn-hires-alpha0.3": ("unet_bundled_25pn", {"overlay_alpha": 0.3, "colormap": "turbo",
                                                         "overlay_method": "hires"}),
    "25-bands-pn-frame-scale": ("unet_bundled_25pn", {"overlay_scale": "frame", "signed_colormap": "rdbu"}),
}


@pytest.fixture(scope="module")
def drive(hsi_drive):
    gen = DriveGenerator(hsi_drive, seed=2002, render_cameras=False)
    dark, white = gen.references()
    raw = gen.frame(7).raw.copy()
    raw[100:160, 600:900] = (1 << hsi_drive.bit_depth) - 1  # a glint, so saturation is exercised too
    return dark, white, raw


@pytest.fixture(scope="module")
def pipelines(drive, tmp_path_factory):
    made = {}

    def get(case: str) -> Pipeline:
        if case not in made:
            model, changes, *card_changes = CASES[case]
            path = REPO / "models" / f"{model}.onnx"
            if not path.exists():
                pytest.skip(f"{path.name} is absent (bundled models are made by `hsi-xai train-segmentation`)")
            card = None
            if card_changes:
                doc = json.loads(path.with_suffix(".json").read_text())
                doc["input"].update(card_changes[0])
                card = tmp_path_factory.mktemp("card") / f"{model}.json"
                card.write_text(json.dumps(doc))
            dark, white, _ = drive
            made[case] = Pipeline(PipelineConfig(model=str(path), card=card and str(card), backend="ort-cpu",
                                                 precision="fp32", **changes), dark, white)
        return made[case]
    return get


def _differences(expected, got) -> dict[str, tuple[int, float]]:
    """Per image: (largest absolute difference, fraction of pixels where any channel differs)."""
    out = {}
    for name in IMAGES:
        a, b = getattr(expected, name), getattr(got, name)
        assert b.dtype == np.uint8 and b.shape == a.shape, (name, b.dtype, b.shape, a.shape)
        d = np.abs(a.astype(np.int16) - b).reshape(a.shape[0], a.shape[1], -1).max(axis=2)
        out[name] = (int(d.max()), float(np.mean(d > 0)))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_in_graph_outputs_equal_the_cpu_pipeline(case, pipelines, drive):
    pipeline = pipelines(case)
    raw = drive[2]
    expected = pipeline.process(raw)
    assert expected.saturated_fraction > 0.005 and expected.labels.any()
    for raw_dtype in ("uint16", "int32"):
        got = InGraphPipeline(pipeline, raw_dtype).process(raw)
        diffs = _differences(expected, got)
        assert all(d == (0, 0.0) for d in diffs.values()), f"{raw_dtype}: {diffs}"
        assert got.saturated_fraction == pytest.approx(expected.saturated_fraction, abs=1e-6)


@pytest.mark.parametrize("case", ["3-bands", "25-bands-pn"])
def test_int32_graph_passes_the_tensorrt_check_and_uint16_fails_only_at_the_raw_input(case, pipelines):
    pipeline = pipelines(case)
    graph = build_ingraph_pipeline(pipeline, "int32")
    assert check_tensorrt(graph.model) == []
    g = graph.model.graph
    # the raw frame, and (card scales) one scale per class for each overlay's map, fed by the host
    assert [(v.name, v.type.tensor_type.elem_type) for v in g.input] == [
        ("overlay_scale.activation.dec1", onnx.TensorProto.FLOAT), ("overlay_scale.seg_gradcam.dec1",
                                                                    onnx.TensorProto.FLOAT),
        ("raw", onnx.TensorProto.INT32)]
    assert {o.name: o.type.tensor_type.elem_type for o in g.output} == {
        **dict.fromkeys(IMAGES, onnx.TensorProto.UINT8), "saturated_fraction": onnx.TensorProto.FLOAT}
    assert all(n.domain in ("", "ai.onnx") for n in g.node)
    assert all(d.HasField("dim_value") for v in [*g.input, *g.output] for d in v.type.tensor_type.shape.dim)
    assert next(o.version for o in graph.model.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert set(graph.stage_nodes) == {"preprocess", "model+explain", "postprocess"}
    assert sum(graph.stage_nodes.values()) == len(g.node)
    problems = check_tensorrt(build_ingraph_pipeline(pipeline, "uint16").model)
    assert problems and all("UINT16" in p for p in problems), problems


def test_bad_frames_are_rejected_before_the_engine_runs(pipelines, drive, monkeypatch):
    fast = InGraphPipeline(pipelines("3-bands"), "int32")

    def must_not_run(*args, **kwargs):
        raise AssertionError("the engine ran on a bad frame")
    monkeypatch.setattr(fast.engine, "run", must_not_run)
    raw = drive[2]
    with pytest.raises(FrameError, match="frame is 1080x2048 .* expects 1088x2048"):
        fast.process(raw[:1080])
    with pytest.raises(FrameError, match="expected a 2-D mono frame"):
        fast.process(raw[None])
    with pytest.raises(FrameError, match="dtype float32"):
        fast.process(raw.astype(np.float32))


def test_bad_options(pipelines):
    pipeline = pipelines("3-bands")
    with pytest.raises(InputError, match="raw_dtype 'float32' must be one of"):
        build_ingraph_pipeline(pipeline, "float32")
    with pytest.raises(InputError, match="TensorRT has no UINT16"):
        InGraphPipeline(pipeline, "uint16", backend="tensorrt")

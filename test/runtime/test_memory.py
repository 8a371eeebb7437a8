"""Memory budgets: the estimate against a hand-worked graph, and models, detectors and rigs refused at load."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from hsi_xai_node.errors import InputError
from hsi_xai_node.runtime import Pipeline, PipelineConfig
from hsi_xai_node.runtime.detection import DetectionPipeline, DetectionPipelineConfig, load_rig
from hsi_xai_node.runtime.memory import check_memory, graph_memory
from hsi_xai_node.transports.config import NodeConfig


def test_peak_of_live_tensors_by_hand():
    # x (1x1x4x4 float, 64 B) -> Relu a (64) -> Mul(a, w) b (64) -> Add(a, b) c (64, output)
    # live: after Relu {a} 64; after Mul {a, b} 128; after Add {b? no: a and b die, c} -> peak 192 while Add runs
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 4, 4], np.ones(16, np.float32))
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Mul", ["a", "w"], ["b"]),
                           helper.make_node("Add", ["a", "b"], ["c"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 1, 4, 4])], [w])
    m = graph_memory(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert (m.weights, m.inputs, m.activations, m.total) == (64, 64, 192, 320)


def test_check_names_the_estimate_and_the_limit():
    with pytest.raises(InputError, match=r"detector 'd' would need about 3,000 MB per frame \(weights 1,000 MB, "
                                         r"warps 2,000 MB\), above the memory limit of 2,048 MB \(parameter "
                                         r"memory_limit_mb\)"):
        check_memory({"weights": 1000 << 20, "warps": 2000 << 20}, 2048, "detector 'd'")
    assert check_memory({"weights": 10}, 1, "m") == 10
    with pytest.raises(InputError, match="memory_limit_mb must be a positive number"):
        check_memory({"weights": 10}, 0, "m")


def test_a_model_over_the_limit_is_refused_at_load(hsi_drive):
    p = Pipeline(PipelineConfig(backend="ort-cpu"))
    assert 20 << 20 < p.memory_bytes < 400 << 20  # the bundled U-Net, 5 classes at once: tens of MB
    with pytest.raises(InputError, match=r"model 'unet_bundled_25pn' would need about \d+ MB per frame \(.*activations "
                                         r"of 5 classes at once .*\), above the memory limit of 10 MB"):
        Pipeline(PipelineConfig(backend="ort-cpu", memory_limit_mb=10))


def test_a_rig_with_a_huge_camera_is_refused_before_a_frame_arrives(tiny_detector, tmp_path):
    rig = load_rig(None)
    lines = ["cameras:"]
    for name, cam in rig.items():
        w, h = (32000, 25600) if name == "rgb" else (cam.width, cam.height)
        lines.append(f"  - {{name: {name}, encoding: {cam.encoding}, width: {w}, height: {h}, "
                     f"homography: {np.asarray(cam.homography).tolist()}}}")
    (tmp_path / "rig.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"detector 'tiny_det_rgb_mir' would need about [\d,]+ MB per frame \(.*camera "
                                         r"frames and warps [\d,]+ MB\), above the memory limit of 4,096 MB"):
        DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu",
                                                  rig=str(tmp_path / "rig.yaml")))
    ok = DetectionPipeline(DetectionPipelineConfig(model=str(tiny_detector), backend="ort-cpu"))
    assert 0 < ok.memory_bytes < 200 << 20


def test_the_limit_is_a_parameter():
    assert NodeConfig().memory_limit_mb == 4096.0
    assert NodeConfig(memory_limit_mb=512).pipeline_config().memory_limit_mb == 512.0
    with pytest.raises(InputError, match="parameter memory_limit_mb: Input should be greater than 0"):
        NodeConfig(memory_limit_mb=0)


def test_a_detector_declaring_a_huge_input_is_refused_at_load(tiny_detector, tmp_path):
    """The case met in the field: ONNX and card both say 1x4x25600x32000; the first frame would need ~18 GB."""
    import json

    from hsi_xai_node.model_card import file_sha256

    model = onnx.load(str(tiny_detector))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = 25600, 32000
    onnx.save(model, str(tmp_path / "huge.onnx"))
    card = json.loads(tiny_detector.with_suffix(".json").read_text())
    card["input"]["shape"] = [1, 4, 25600, 32000]
    card["sha256"] = file_sha256(tmp_path / "huge.onnx")
    (tmp_path / "huge.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match=r"would need about [\d,]+ MB per frame \(.*model inputs 12,500 MB"):
        DetectionPipeline(DetectionPipelineConfig(model=str(tmp_path / "huge.onnx"), backend="ort-cpu",
                                                  explain_boxes=0))

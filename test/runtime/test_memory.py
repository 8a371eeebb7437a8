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


def _segmenter_with(tmp_path, extra_nodes, extra_inits, feeds_conv: str):
    """The tiny test segmenter (test_model_card) with `extra_nodes` computing `feeds_conv`, which replaces the
    input of its first convolution; the card rewritten for the new file."""
    import dataclasses

    from hsi_xai_node.model_card import ModelCard, file_sha256
    from test.test_model_card import write_pair

    path = write_pair(tmp_path)
    model = onnx.load(str(path))
    model.graph.node[0].input[0] = feeds_conv
    for node in reversed(extra_nodes):
        model.graph.node.insert(0, node)
    model.graph.initializer.extend(extra_inits)
    onnx.save(model, str(path))
    card = ModelCard.load(path.with_suffix(".json"))
    path.with_suffix(".json").write_text(dataclasses.replace(card, sha256=file_sha256(path)).to_json())
    return path


def _ints(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], np.asarray(values, np.int64))


def test_a_shape_decided_by_the_input_values_is_refused_at_load(tmp_path, hsi_drive):
    """Tile repeats computed from the input's values: the estimate cannot know the size the first frame will ask
    for (measured: 27 MB estimated, 1,062 MB used): refused at load, naming the tensor and the op."""
    nodes = [helper.make_node("ReduceMax", ["input"], ["peak"], keepdims=0),
             helper.make_node("Cast", ["peak"], ["peak_i"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["peak_i", "one"], ["times"]),
             helper.make_node("Concat", ["ones3", "times"], ["repeats"], axis=0),
             helper.make_node("Tile", ["input", "repeats"], ["tiled"], name="grow"),
             helper.make_node("Slice", ["tiled", "zeros4", "shape4"], ["same"])]
    path = _segmenter_with(tmp_path, nodes, [_ints("one", [1]), _ints("ones3", [1, 1, 1]),
                                             _ints("zeros4", [0, 0, 0, 0]), _ints("shape4", [1, 3, 16, 32])], "same")
    with pytest.raises(InputError, match=r"model 'tiny': tensor 'tiled' \(node grow, op Tile\) has a shape decided at "
                                         r"run time by the input's values, with no bound in the graph: refused"):
        Pipeline(PipelineConfig(model=str(path), backend="ort-cpu"))


def test_value_dependent_shapes_with_a_bound_in_the_graph_are_estimated_at_it():
    """NonMaxSuppression keeps at most max_output_boxes_per_class per class: the estimate takes that bound."""
    from hsi_xai_node.runtime.memory import bounded_shapes

    g = helper.make_graph(
        [helper.make_node("NonMaxSuppression", ["boxes", "scores", "keep"], ["selected"]),
         helper.make_node("Gather", ["scores_flat", "selected"], ["picked"])], "g",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 100, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3, 100]),
         helper.make_tensor_value_info("scores_flat", TensorProto.FLOAT, [300])],
        [helper.make_tensor_value_info("picked", TensorProto.FLOAT, None)], [_ints("keep", [7])])
    shapes = bounded_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert shapes["selected"] == [21, 3] and shapes["picked"] == [21, 3]
    # the bundled detector (NMS in its graph) loads, its estimate bounded
    p = DetectionPipeline(DetectionPipelineConfig(backend="ort-cpu"))
    assert 0 < p.memory_bytes < 1 << 30


def failing_segmenter(directory):
    """The tiny segmenter made to fail inside the engine when the input's peak is 1.5 or more (a Gather index computed
    from it runs out of its table): static shapes, so it loads; bright frames then fail at run time."""
    directory.mkdir(parents=True, exist_ok=True)
    nodes = [helper.make_node("ReduceMax", ["input"], ["peak"], keepdims=0),
             helper.make_node("Mul", ["peak", "two"], ["scaled"]),
             helper.make_node("Cast", ["scaled"], ["index"], to=TensorProto.INT64),
             helper.make_node("Gather", ["table", "index"], ["offset"]),  # out of bounds when the peak >= 1.5
             helper.make_node("Add", ["input", "offset"], ["shifted"])]
    inits = [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
             helper.make_tensor("table", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])]
    return _segmenter_with(directory, nodes, inits, "shifted")


def test_an_engine_failing_on_a_frame_rejects_that_frame_only(tmp_path, hsi_drive):
    """A graph that fails at run time for some inputs (a Gather index computed from the input's values): that frame
    raises the project's own error, one line with the engine's reason, and the next frame is processed."""
    from hsi_xai_node.runtime import EngineRunError
    from hsi_xai_node.scenes.drive import DriveGenerator

    path = failing_segmenter(tmp_path)
    gen = DriveGenerator(hsi_drive, seed=2001, render_cameras=False)
    dark, white = gen.references()
    p = Pipeline(PipelineConfig(model=str(path), backend="ort-cpu"), dark, white)
    bright = np.full(hsi_drive.frame_shape, 1023, np.uint16)  # reflectance above 1.5 where the white is dim
    with pytest.raises(EngineRunError) as info:
        p.process(bright)
    text = str(info.value)
    assert text.startswith("ort-cpu engine failed on this frame: ") and "\n" not in text
    assert info.value.reason == "engine failed on the frame"
    assert p.process(gen.frame(3).raw).labels.shape == hsi_drive.cube_shape[1:]  # the next frame goes through

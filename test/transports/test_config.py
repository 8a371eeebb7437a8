"""Node/replay parameters: the YAML file, the new detection parameters, and bad values named by key."""

import dataclasses

import pytest

from hsi_xai_node.errors import InputError
from hsi_xai_node.model_card import ModelError
from hsi_xai_node.runtime.detection import DEFAULT_DETECTOR, DetectionPipeline, DetectionPipelineConfig
from hsi_xai_node.transports.config import DEFAULT_CONFIG, NodeConfig, load_config, resolve_topic


def params_file(path, body: str):
    path.write_text("/**/hsi_xai:\n  ros__parameters:\n" + "".join(f"    {line}\n" for line in body.splitlines()))
    return path


def test_the_installed_file_equals_the_defaults():
    assert load_config(DEFAULT_CONFIG, resolve=False) == NodeConfig()
    assert load_config(DEFAULT_CONFIG) == NodeConfig().resolved()
    config = NodeConfig()
    assert config.camera_topics() == {"rgb": "rgb/image_raw", "nir": "nir/image_raw", "mir": "mir/image_raw",
                                      "fir": "fir/image_raw"}
    det = config.detection_config()
    assert det.model == str(DEFAULT_DETECTOR) and det.card is None and det.rig is None
    assert (det.score_threshold, det.explain_boxes, det.overlay_method) == (None, 10, "box_gradcam")


@pytest.mark.parametrize("name, namespace, node, expected", [
    ("hsi/image_raw", "/", "hsi_xai", "/hsi/image_raw"),
    ("hsi/image_raw", "/left", "hsi_xai", "/left/hsi/image_raw"),
    ("hsi/image_raw", "/car/left/", "hsi_xai", "/car/left/hsi/image_raw"),
    ("/hsi/image_raw", "/left", "hsi_xai", "/hsi/image_raw"),  # absolute stays
    ("~", "/left", "hsi_xai", "/left/hsi_xai"),
    ("~/segmentation", "/", "head", "/head/segmentation"),
    ("~/segmentation", "", "hsi_xai", "/hsi_xai/segmentation"),
])
def test_topic_names_resolve_as_ros_expands_them(name, namespace, node, expected):
    """rcl's expansion (design article "Topic and Service name mapping to DDS"): relative names under the
    namespace, "~" the node's private namespace, absolute names untouched."""
    assert resolve_topic(name, namespace, node) == expected


def test_a_configuration_resolved_for_a_namespace(tmp_path):
    config = NodeConfig().resolved("/left")
    assert (config.raw_topic, config.output_topic("segmentation")) == ("/left/hsi/image_raw",
                                                                       "/left/hsi_xai/segmentation")
    # camera names still come from the topics as written, not from the namespace
    assert config.camera_topics() == {"rgb": "/left/rgb/image_raw", "nir": "/left/nir/image_raw",
                                      "mir": "/left/mir/image_raw", "fir": "/left/fir/image_raw"}
    assert config.resolved("/right") == config  # absolute names are final
    root = NodeConfig().resolved()
    assert (root.raw_topic, root.output_namespace) == ("/hsi/image_raw", "/hsi_xai")


def test_detection_parameters_parse_from_yaml(tmp_path):
    for name in ("det.onnx", "det_card.json", "car.yaml"):  # path parameters must name existing files
        (tmp_path / name).write_text("")
    config = load_config(params_file(tmp_path / "p.yaml", f"""\
multispectral_topics: [/cam/front/color, /cam/front/thermal]
multispectral_cameras: [rgb, mir]
sync_slop_s: 0.005
detector_model: {tmp_path}/det.onnx
detector_card: {tmp_path}/det_card.json
rig_file: {tmp_path}/car.yaml
detection_score_threshold: 0.4
explain_boxes: 3
detection_overlay_method: box_gradcam_signed
detection_layer: class_head_input
colormap: turbo
signed_colormap: rdbu
input_qos: reliable
output_qos: sensor_data"""))
    assert config.camera_topics() == {"rgb": "/cam/front/color", "mir": "/cam/front/thermal"}
    assert config.detector_topics(["rgb", "mir"]) == ["/cam/front/color", "/cam/front/thermal"]
    assert (config.input_qos, config.output_qos) == ("reliable", "sensor_data")
    assert config.detection_config() == DetectionPipelineConfig(
        model=f"{tmp_path}/det.onnx", card=f"{tmp_path}/det_card.json", rig=f"{tmp_path}/car.yaml", backend="auto",
        precision="fp16", cache_dir=None, score_threshold=0.4, explain_boxes=3, overlay_method="box_gradcam_signed",
        layer="class_head_input", colormap="turbo", signed_colormap="rdbu")
    assert NodeConfig().detection_config().layer == "box_level"  # the default
    # "" turns detection off; integers are fine for float parameters
    config = load_config(params_file(tmp_path / "q.yaml", 'detector_model: ""\nsync_slop_s: 0'))
    assert config.detection_config() is None and config.sync_slop_s == 0.0


@pytest.mark.parametrize("body, match", [
    ("explain_boxes: -1", r"parameter explain_boxes: Input should be greater than or equal to 0 \(got -1\)"),
    ("explain_boxes: ten", r"parameter explain_boxes: Input should be a valid integer \(got 'ten'\)"),
    ("explain_boxes: 2.5", r"parameter explain_boxes: Input should be a valid integer \(got 2.5\)"),
    ("detection_score_threshold: 1.5", r"parameter detection_score_threshold: Input should be less than 1"),
    ("detection_score_threshold: high", "parameter detection_score_threshold: Input should be a valid number"),
    ("detection_overlay_method: gradcam", "overlay_method 'gradcam' must be a per-box method with a map"),
    ("detection_methods: [box_lrp]", r"detection methods \['box_lrp'\] unknown"),
    ("methods: [activation, lrp]", r"methods \['lrp'\] unknown"),
    ("detector_model: 3", r"parameter detector_model: Input should be a valid string \(got 3\)"),
    ("rig_file: [a, b]", "parameter rig_file: Input should be a valid string"),
    ("multispectral_cameras: rgb", "parameter multispectral_cameras: Input should be a valid tuple"),
    ("sync_slop_s: -0.1", "parameter sync_slop_s: Input should be greater than or equal to 0"),
    ("publish_class_maps: 1", r"parameter publish_class_maps: Input should be a valid boolean \(got 1\)"),
    ("multispectral_cameras: [rgb, mir]",
     r"multispectral_cameras \(2 names: \['rgb', 'mir'\]\) and multispectral_topics \(4 topics"),
    ("multispectral_topics: [/a/rgb, /b/mir]\nmultispectral_cameras: [rgb, rgb]",
     r"camera name\(s\) \['rgb'\] given twice by multispectral_cameras"),
    ("multispectral_topics: [/cam/rgb, /cam/mir]",
     (r"camera name\(s\) \['cam'\] given twice by the first path segments of multispectral_topics "
      r"\(set multispectral_cameras")),
    ("multispectral_topics: [/rgb/a, /rgb/a]\nmultispectral_cameras: [rgb, mir]",
     r"multispectral_topics lists \['/rgb/a'\] twice"),
    ("input_qos: best_effort", r"parameter input_qos: Input should be 'sensor_data' or 'reliable'"),
    ("output_qos: latched", "parameter output_qos: Input should be"),
    ("model: /nope.onnx", "parameter model: '/nope.onnx' is not an existing file"),
    ("card: /nope.json", "parameter card: '/nope.json' is not an existing file"),
    ("detector_model: /nope.onnx", "parameter detector_model: '/nope.onnx' is not an existing file"),
    ("rig_file: /nope.yaml", "parameter rig_file: '/nope.yaml' is not an existing file"),
    ("sensor_profile: /nope.xml", "parameter sensor_profile: '/nope.xml' is not an existing file"),
    ("backend: cuda", "parameter backend: Input should be 'auto', 'tensorrt', 'ort-trt', 'ort-cuda', 'openvino' or 'ort-cpu'"),
    ("overlay_alpha: .nan", "parameter overlay_alpha: "),
    ("memory_limit_mb: .inf", "parameter memory_limit_mb: "),
    ("sync_slop_s: true", r"parameter sync_slop_s: Input should be a valid number \(got True\)"),
    # the pipelines' own checks run when the file is read, so these name the file too
    ("overlay_alpha: 2.0", r"parameter overlay_alpha: Input should be less than or equal to 1 \(got 2.0\)"),
    ("colormap: rainbow", "colormap 'rainbow': one-sided maps need a sequential colormap"),
    ("signed_colormap: inferno", "signed_colormap 'inferno': signed maps need a diverging colormap"),
    ("overlay_scale: fixed", r"parameter overlay_scale: Input should be 'card', 'running' or 'frame'"),
])
def test_bad_values_name_the_parameter(tmp_path, body, match):
    path = params_file(tmp_path / "bad.yaml", body)
    with pytest.raises(InputError, match=f"config {path}: .*{match}"):
        load_config(path)


def test_a_camera_the_detector_needs_without_a_topic_names_it_and_what_to_set():
    config = NodeConfig(multispectral_topics=("/rgb/image_raw", "/thermal/image_raw"))
    with pytest.raises(InputError, match=r"needs camera\(s\) \['mir'\], which no topic gives: add the topic to "
                                         r"multispectral_topics .*multispectral_cameras"):
        config.detector_topics(["rgb", "mir"])
    renamed = NodeConfig(multispectral_topics=("/rgb/image_raw", "/thermal/image_raw"),
                         multispectral_cameras=("rgb", "mir"))
    assert renamed.detector_topics(["rgb", "mir"]) == ["/rgb/image_raw", "/thermal/image_raw"]


def test_a_missing_detector_file_is_named_by_its_parameter_or_the_loader(tmp_path):
    with pytest.raises(InputError, match=r"parameter detector_model: '.*nowhere\.onnx' is not an existing file"):
        NodeConfig(detector_model=str(tmp_path / "nowhere.onnx"), backend="ort-cpu")
    with pytest.raises(ModelError, match=r"detector .*nowhere\.onnx: no such file"):
        DetectionPipeline(DetectionPipelineConfig(model=str(tmp_path / "nowhere.onnx"), backend="ort-cpu"))


def test_parameter_ranges_come_from_the_declared_bounds():
    import sys

    from hsi_xai_node.transports.config import RESTART_PARAMETERS, parameter_range

    assert parameter_range("overlay_alpha") == (float, 0, 1, False)
    assert parameter_range("detection_score_threshold") == (float, 0, 1, True)  # < 1: the end is the node's check
    assert parameter_range("explain_boxes") == (int, 0, 256, False)
    assert parameter_range("max_input_age_s") == (float, 0, 10, False)
    assert parameter_range("memory_limit_mb") == (float, 0, sys.float_info.max, True)
    assert parameter_range("raw_topic") is None and parameter_range("publish_class_maps") is None
    assert RESTART_PARAMETERS <= {f.name for f in dataclasses.fields(NodeConfig)}
    assert {"raw_topic", "camera_transport", "output_namespace"} <= RESTART_PARAMETERS
    assert "overlay_alpha" not in RESTART_PARAMETERS and "detector_model" not in RESTART_PARAMETERS


def test_transport_and_age_parameters_are_checked():
    assert NodeConfig(camera_transport="compressed", max_input_age_s=0.5).camera_transport == "compressed"
    with pytest.raises(InputError, match="parameter camera_transport"):
        NodeConfig(camera_transport="theora")
    with pytest.raises(InputError, match="parameter max_input_age_s"):
        NodeConfig(max_input_age_s=-1.0)


def test_every_parameter_has_a_node_description():
    pytest.importorskip("rclpy", reason="the node's descriptors need rclpy (pip install -e '.[ros]')")
    from hsi_xai_node.ros.parameters import DESCRIPTIONS, descriptor

    assert set(DESCRIPTIONS) == {f.name for f in dataclasses.fields(NodeConfig)}
    d = descriptor("overlay_alpha")
    assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value, d.read_only) == (0.0, 1.0, False)
    assert descriptor("raw_topic").read_only and not descriptor("raw_topic").floating_point_range

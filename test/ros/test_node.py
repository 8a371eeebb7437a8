"""The node with real rclpy over DDS, inside a private network namespace on loopback only.

A publisher sends generated raw frames (and a bad one), and in the detection run the RGB and
MIR camera frames too; the node (its own process, parameters from config/hsi_xai.yaml, the
file the launch file uses) processes them, a subscriber receives every output; here each
output is compared with the offline pipelines' results for the same frames.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from test.conftest import REPO

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e '.[ros]' gives the ros-jazzy wheels)")

NETNS_SETUP = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && "
PARAMS = REPO / "config" / "hsi_xai.yaml"


def _netns_prefix():
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare/ip not available: cannot make a private network namespace")
    flag = "-n" if os.geteuid() == 0 else "-rn"
    probe = subprocess.run(["unshare", flag, "sh", "-c", NETNS_SETUP + "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a private network namespace here: {probe.stderr.strip()}")
    return ["unshare", flag, "sh", "-c"]


def _in_netns(script: str, out_dir, *args, domain: int = 77, timeout: int = 300, env: dict | None = None) -> dict:
    """Run `python -m test.ros.<script> OUT_DIR PARAMS ARGS...` in its own network namespace (`env` added to the
    environment); its result.json."""
    prefix = _netns_prefix()
    extra = env or {}
    env = {**os.environ, **extra, "ROS_DOMAIN_ID": str(domain), "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), extra.get("PYTHONPATH", os.environ.get("PYTHONPATH"))]))}
    cmd = NETNS_SETUP + f"exec {sys.executable} -m test.ros.{script} {out_dir} {PARAMS} " + " ".join(map(str, args))
    run = subprocess.run(prefix + [cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((out_dir / "result.json").read_text())


def _roundtrip(out_dir, *args, env: dict | None = None):
    """Run test.ros.dds_roundtrip in its own network namespace; (result.json, outputs.npz)."""
    return _in_netns("dds_roundtrip", out_dir, *args, env=env), np.load(out_dir / "outputs.npz")


@pytest.fixture(scope="session")
def ros_interfaces(request):
    """(environment with vision_msgs and foxglove_msgs built from their definitions, "") or ({}, why they could
    not be built here): test/ros/interfaces.py."""
    from test.ros import interfaces

    try:
        return interfaces.environment(interfaces.build(request.config.cache.mkdir("ros_interfaces"))), ""
    except interfaces.Unavailable as exc:
        return {}, str(exc)


# the mosaic camera's camera_info the roundtrip publishes (dds_roundtrip.CAMERA_K), through the cube by hand:
# HSI-Drive's filter area starts at column 0, row 3; a cube pixel is a 5x5 tile, its centre the tile's third pixel
RGB_K = [520.0, 0.0, 318.2, 0.0, 515.0, 241.9, 0.0, 0.0, 1.0]  # dds_roundtrip.RGB_K: the RGB camera's
CUBE_K = [2410.0 / 5, 0.0, (1019.3 - 2) / 5, 0.0, 2395.0 / 5, (547.8 - 3 - 2) / 5, 0.0, 0.0, 1.0]


def _check_camera_info(result, stamps, window=None):
    for stamp in stamps:
        info = result["camera_info"]["camera_info"][str(stamp)]
        assert (info["width"], info["height"], info["frame_id"]) == (409, 216, "hsi_camera")
        np.testing.assert_allclose(info["k"], CUBE_K, rtol=1e-12)
        assert info["d"] == [-0.21, 0.08, 0.0012, -0.0007, -0.015]
        if window is not None:  # the class maps: the model's window of the cube
            top, left, height, width = window
            crop = result["camera_info"]["class_maps/camera_info"][str(stamp)]
            assert (crop["width"], crop["height"]) == (width, height)
            np.testing.assert_allclose(crop["k"], [*CUBE_K[:2], CUBE_K[2] - left, CUBE_K[3], CUBE_K[4],
                                                   CUBE_K[5] - top, 0, 0, 1], rtol=1e-12)


def _segmentation_pipeline(result, cameras=False, **overrides):
    """(drive generator as the roundtrip made it, node config, offline segmentation pipeline)."""
    from hsi_xai_node.runtime import Pipeline
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.calibration import load_profile
    from hsi_xai_node.transports.config import load_config

    gen = DriveGenerator(load_profile("hsi-drive"), seed=result["seed"], render_cameras=cameras)
    config = load_config(PARAMS, backend="ort-cpu", **overrides)
    return gen, config, Pipeline(config.pipeline_config(), *gen.references())


def _check_segmentation(outputs, result, gen, pipeline, indices, class_map: bool):
    for index in indices:
        frame = gen.frame(index)
        offline = pipeline.process(frame.raw)
        for name in ("labels", "segmentation", "preview", "gradcam_overlay", "activation_overlay"):
            np.testing.assert_array_equal(outputs[f"{name}_{frame.stamp_ns}"], getattr(offline, name), err_msg=name)
            assert result["frame_ids"][f"{name}:{frame.stamp_ns}"] == "hsi_camera"  # the input header
        if class_map:  # the road class map as 32FC1, equal to the pipeline's float map
            road = next(c.channel for c in pipeline.card.classes if c.name == "road")
            np.testing.assert_array_equal(outputs[f"class_maps_road_{frame.stamp_ns}"],
                                          next(iter(offline.class_maps.values()))[road])


def test_node_over_dds_matches_the_offline_pipeline(tmp_path):
    """Detection off: raw frames in, the segmentation outputs out; bad and backwards frames reported."""
    result, outputs = _roundtrip(tmp_path)
    gen, _, pipeline = _segmentation_pipeline(result)
    _check_segmentation(outputs, result, gen, pipeline, result["frames"], class_map=False)
    _check_camera_info(result, [gen.frame(i).stamp_ns for i in result["frames"]])
    assert set(result["diagnostics"]) == {"hsi_xai: pipeline"}  # no detection status when detection is off
    diag = result["diagnostics"]["hsi_xai: pipeline"]
    assert diag["bad: wrong encoding"] == "1" and diag["backend"] == "ort-cpu" and diag["references"] == "yes"
    assert int(diag["processed"]) == 2 and diag["model"] == "unet_bundled_25pn"
    assert diag["bad: stamp not after the previous frame's"] == "1"
    # levels that mean what they say: OK at start-up (no frame yet, references awaited), WARN naming each fault
    start = result["startup_diagnostics"]["hsi_xai: pipeline"]
    assert start["level"] == 0 and start["references"] == "no"
    assert start["message"] == "ok, waiting for the dark and white reference frame(s)"
    assert diag["level"] == 1
    assert diag["message"] == "1 wrong encoding; 1 stamp not after the previous frame's", diag["message"]


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory, tiny_detector, ros_interfaces):
    out = tmp_path_factory.mktemp("dds_detection")
    return _roundtrip(out, "detection", tiny_detector, env=ros_interfaces[0])


@pytest.fixture(scope="module")
def offline_detections(detection_run, tiny_detector):
    """The offline DetectionPipeline's result for each frame the node detected on, by stamp."""
    from hsi_xai_node.runtime.detection import DetectionPipeline

    result, _ = detection_run
    gen, config, _ = _segmentation_pipeline(result, cameras=True, detector_model=str(tiny_detector))
    detector = DetectionPipeline(config.detection_config())
    out = {}
    for index in result["frames"]:
        frame = gen.frame(index)
        out[frame.stamp_ns] = detector.process({n: frame.cameras[n].image for n in detector.cameras})
    return out


def test_node_over_dds_segments_and_detects_like_the_offline_pipelines(detection_run, offline_detections,
                                                                       tiny_detector):
    """Raw frames segmented on their own (one without camera frames too); RGB + MIR sets detected, the
    overlay equal to the offline DetectionPipeline's under the primary (RGB) camera's header."""
    result, outputs = detection_run
    gen, _, pipeline = _segmentation_pipeline(result, cameras=True, detector_model=str(tiny_detector),
                                              publish_class_maps=True, explain_classes=("road",))
    _check_segmentation(outputs, result, gen, pipeline, [*result["frames"], result["lonely"]], class_map=True)
    i = pipeline.card.input
    _check_camera_info(result, [gen.frame(k).stamp_ns for k in result["frames"]],
                       window=(i.crop_top, i.crop_left, i.height, i.width))
    # the detection overlay is the RGB camera's own pixels (overlay_zoom 1): its camera_info is the RGB camera's,
    # under the RGB camera's header (test_camera_model checks a zoom's)
    for stamp in offline_detections:
        info = result["camera_info"]["detection/camera_info"][str(stamp)]
        assert (info["width"], info["height"], info["frame_id"]) == (640, 480, "rgb_camera")
        assert info["k"] == RGB_K and info["d"] == [-0.21, 0.08, 0.0012, -0.0007, -0.015]
        assert outputs[f"detection_overlay_{stamp}"].shape == (480, 640, 3)
    for stamp, offline in offline_detections.items():
        assert offline.detections, "the test detector should detect something on every frame"
        np.testing.assert_array_equal(outputs[f"detection_overlay_{stamp}"], offline.detection_overlay)
        assert result["frame_ids"][f"detection/overlay:{stamp}"] == "rgb_camera"  # RGB's stamp (MIR's is 4 ms later)
    lonely = gen.frame(result["lonely"]).stamp_ns
    assert f"detection_overlay_{lonely}" not in outputs  # its MIR partner never came

    pipe, det = result["diagnostics"]["hsi_xai: pipeline"], result["diagnostics"]["hsi_xai: detection"]
    assert pipe["processed"] == "3" and pipe["bad: wrong encoding"] == "1" and "unsynchronised_dropped" not in pipe
    assert det["processed"] == "2" and det["detector"] == "tiny_det_rgb_mir" and det["backend"] == "ort-cpu"
    assert det["bad: wrong encoding on /rgb/image_raw"] == "1" and det["unsynchronised_dropped"] == "1"
    assert det["cameras"] == "rgb=/rgb/image_raw, mir=/mir/image_raw"
    last = offline_detections[max(offline_detections)]
    assert det["detections_last"] == str(len(last.detections))
    assert det["detections_total"] == str(sum(len(r.detections) for r in offline_detections.values()))
    assert {"frontend_ms", "engine_ms", "post_ms", "total_ms", "frames_per_s"} <= set(det)
    assert pipe["level"] == 1 and pipe["message"] == "1 wrong encoding"
    assert det["level"] == 1 and det["message"].startswith("1 wrong encoding on /rgb/image_raw")
    if not result["vision_msgs"]:
        assert det["detections"].startswith("not published: vision_msgs is not installed (apt install ros-")
    else:
        assert det["detections"] == "published"


def test_node_over_dds_publishes_detection2darray(detection_run, offline_detections, ros_interfaces):
    result, _ = detection_run
    if not result["vision_msgs"]:
        pytest.skip(f"vision_msgs could not be built from its definitions here ({ros_interfaces[1]}) and has no pip "
                    "wheel: the node does not publish Detection2DArray, which test_node_over_dds_segments_and_"
                    "detects_... checks it reports on /diagnostics")
    from hsi_xai_node.transports.outputs import detection_fields

    for stamp, offline in offline_detections.items():
        assert result["frame_ids"][f"detections:{stamp}"] == "rgb_camera"
        expected = [[f.center_x, f.center_y, f.size_x, f.size_y, f.class_id, f.score, f.id, "rgb_camera"]
                    for f in detection_fields(offline)]
        assert result["detections"][str(stamp)] == expected


def test_node_over_dds_publishes_foxglove_annotations(detection_run, offline_detections, ros_interfaces):
    """Foxglove's ImageAnnotations (foxglove_msgs built from its definitions): each detection's box on the primary
    camera and each class region's outline on the cube, the numbers of the offline pipelines' results."""
    from hsi_xai_node.transports.annotations import detection_annotations

    result, _ = detection_run
    if not result["foxglove_msgs"]:
        pytest.skip(f"foxglove_msgs could not be built from its definitions here ({ros_interfaces[1]}) and has no "
                    "pip wheel: the node does not publish ImageAnnotations")
    for stamp, offline in offline_detections.items():
        polygons, _ = detection_annotations(offline)
        assert result["annotations"]["detection_annotations"][str(stamp)] == [[list(p) for p in poly.points]
                                                                               for poly in polygons]
        assert result["annotations"]["segmentation_annotations"][str(stamp)]  # the class regions' outlines


def test_node_detection_parameters_change_at_run_time(detection_run, tiny_detector):
    """A bad camera list is refused with the reason; a new overlay method rebuilds the detector."""
    from hsi_xai_node.runtime.detection import DetectionPipeline

    result, outputs = detection_run
    refused, changed = result["changes"]["multispectral_cameras"], result["changes"]["detection_overlay_method"]
    assert not refused["successful"] and "must be parallel lists" in refused["reason"]
    assert changed["successful"], changed["reason"]
    gen, config, _ = _segmentation_pipeline(result, cameras=True, detector_model=str(tiny_detector),
                                            detection_overlay_method="box_gradcam_signed")
    frame = gen.frame(result["after_change"])
    images = {n: frame.cameras[n].image for n in ("rgb", "mir")}
    signed = DetectionPipeline(config.detection_config()).process(images)
    np.testing.assert_array_equal(outputs[f"detection_overlay_{frame.stamp_ns}"], signed.detection_overlay)
    unsigned = DetectionPipeline(dataclasses.replace(config.detection_config(), overlay_method="box_gradcam"))
    assert not np.array_equal(unsigned.process(images).detection_overlay, signed.detection_overlay)


def test_start_up_errors_are_one_line_and_signals_stop_the_node_cleanly(tmp_path):
    """A bad parameter or a missing model: one line naming it, exit status 2, no traceback. SIGTERM and SIGINT:
    exit status 0, no traceback, and a last /diagnostics published on the way out."""
    r = _in_netns("node_startstop", tmp_path, domain=78, timeout=400)
    # out of the range in its descriptor: refused by rclpy itself, named by it
    for case, expected in (("bad_alpha", "cannot start: Invalid parameter value (2.0) for parameter. Reason: "
                                         "Parameter overlay_alpha out of range Min: 0.0, Max: 1.0"),
                           ("missing_model", "cannot start: parameter model: '/nope.onnx' is not an existing file")):
        text = r[case]["stdout"] + r[case]["stderr"]
        assert r[case]["rc"] == 2 and expected in text and "Traceback" not in text, text
        assert len([line for line in text.splitlines() if line.strip()]) == 1, text
    for case in ("sigterm", "sigint"):
        text = r[case]["stdout"] + r[case]["stderr"]
        assert r[case]["was_up"] and r[case]["rc"] == 0, text
        assert "Traceback" not in text and "Exception" not in text, text
        assert r[case]["diagnostics_after_signal"] >= 1
    # /diagnostics says how the engine was chosen: auto by measurement here, or named
    assert r["sigterm"]["backend_choice"].startswith("auto: "), r["sigterm"]["backend_choice"]
    assert r["sigint"]["backend_choice"] == "ort-cpu (named in the configuration)"
    assert r["sigint"]["arithmetic"] == "IEEE float32"  # and what the maps were computed in


def test_the_node_judges_a_bag_as_the_replay_does(tmp_path):
    """The bag test_replay replays (stamps that repeat and go back, a damaged white reference), played to the
    node over DDS: the same counts, by the same words, and the last good references kept."""
    from hsi_xai_node.transports.config import load_config
    from test.transports.disordered_bag import EXPECTED, write_disordered_bag

    bag = write_disordered_bag(tmp_path / "disordered", load_config(PARAMS))
    r = _in_netns("bag_to_node", tmp_path, bag, domain=79, timeout=400)
    diag = r["diagnostics"]
    assert diag["processed"] == str(EXPECTED["processed"]) and r["labels"] == EXPECTED["processed"]
    assert diag["bad: stamp not after the previous frame's"] == str(EXPECTED["stamp"])
    assert diag["bad: bad reference frame"] == str(EXPECTED["bad_reference"])
    assert diag["references"] == "yes" and diag["frames_without_references"] == str(EXPECTED["uncalibrated"])


def test_two_namespaced_nodes_keep_to_their_own_topics(tmp_path):
    """namespace:=left and namespace:=right with the shipped parameter file: each head reads /<head>/hsi/... and
    publishes /<head>/hsi_xai/..., the other head's frame never reaches it, and nothing is published or read at
    the root names a node without a namespace would use."""
    result = _in_netns("two_heads", tmp_path, domain=80)
    assert result["got"] == {head: [stamp] for head, stamp in result["sent"].items()}
    assert result["sent"]["left"] != result["sent"]["right"]
    assert result["stray"] == [] and result["root_raw_subscribers"] == 0

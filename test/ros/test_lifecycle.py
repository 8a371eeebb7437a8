"""The managed (lifecycle) node with real rclpy over DDS, inside a private network namespace on loopback only:
its transitions (a configure that fails on a bad model file and says why), parameter descriptors and the
refusals ROS makes from them, compressed inputs, max_input_age_s and per-output latency
(test/ros/lifecycle_bringup.py runs the node and the tester; here the outputs are checked against the
offline pipelines)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from test.conftest import REPO
from test.ros.test_node import NETNS_SETUP, PARAMS, _netns_prefix

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e '.[ros]' gives the ros-jazzy wheels)")


@pytest.fixture(scope="module")
def bringup(tmp_path_factory, tiny_detector):
    out = tmp_path_factory.mktemp("lifecycle")
    bad_model = out / "not_a_model.onnx"
    bad_model.write_bytes(b"this is not an ONNX protobuf")
    prefix = _netns_prefix()
    env = {**os.environ, "ROS_DOMAIN_ID": "81", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = NETNS_SETUP + (f"exec {sys.executable} -m test.ros.lifecycle_bringup {out} {PARAMS} {bad_model} "
                         f"{tiny_detector}")
    run = subprocess.run(prefix + [cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((out / "result.json").read_text()), np.load(out / "outputs.npz"), run.stdout + run.stderr, \
        bad_model


def test_transitions_and_a_configure_that_fails_on_a_bad_model(bringup):
    r, _, log, bad_model = bringup
    assert r["initial"] == "unconfigured" and r["unconfigured_input_subscribers"] == 0
    assert r["bad_configure"]["success"] is False and r["bad_configure"]["state"] == "unconfigured"
    diag = r["bad_configure_diagnostics"]
    assert diag["message"].startswith("configure failed: ") and str(bad_model) in diag["message"]
    assert diag["state"] == "unconfigured" and "configure failed: " in log and str(bad_model) in log
    assert r["fix_model"] == r["fix_card"] == {"successful": True, "reason": ""}
    assert r["configure"]["success"] and r["configure"]["state"] == "inactive"
    assert r["inactive_input_subscribers"] == [0, 0, 0]  # configured, not yet listening
    assert r["activate"]["success"] and r["activate"]["state"] == "active"
    assert r["deactivate"]["state"] == "inactive" and r["inactive_again_input_subscribers"] == [0, 0, 0]
    assert r["processed_while_inactive"] is False
    # the engines survived deactivate: activating again is a matter of subscriptions, not of loading
    assert r["reactivate"]["success"] and r["processed_after_reactivate"]
    assert r["reactivate"]["seconds"] < r["configure"]["seconds"]
    assert [r[k]["state"] for k in ("deactivate_2", "cleanup", "shutdown")] == ["inactive", "unconfigured",
                                                                                "finalized"]


def test_descriptors_carry_ranges_and_ros_refuses_what_they_exclude(bringup):
    r, *_ = bringup
    d = r["descriptors"]
    assert d["overlay_alpha"]["float_range"] == [[0.0, 1.0]] and not d["overlay_alpha"]["read_only"]
    assert d["explain_boxes"]["int_range"] == [[0, 256]] and d["max_input_age_s"]["float_range"] == [[0.0, 10.0]]
    assert d["raw_topic"]["read_only"] and d["raw_topic"]["float_range"] == d["raw_topic"]["int_range"] == []
    assert "mosaic" in d["raw_topic"]["description"]
    s = r["set"]
    assert not s["raw_topic"]["successful"] and "read-only" in s["raw_topic"]["reason"]
    for name in ("overlay_alpha_high", "explain_boxes_high"):  # refused by rclpy from the descriptor's range
        assert not s[name]["successful"] and "range" in s[name]["reason"].lower(), s[name]
    # the exclusive end (memory must be > 0) is the node's own check, with its reason
    assert not s["memory_limit_mb_zero"]["successful"] and "memory_limit_mb" in s["memory_limit_mb_zero"]["reason"]
    assert s["overlay_alpha"]["successful"] and s["max_input_age_s"]["successful"] and s["max_input_age_s_off"]["successful"]


def test_compressed_inputs_give_the_offline_outputs(bringup, tiny_detector):
    """PNG is lossless: the mosaic and camera frames the node decoded are the generator's, so its outputs equal
    the offline pipelines' on the same frames."""
    from hsi_xai_node.runtime import Pipeline
    from hsi_xai_node.runtime.detection import DetectionPipeline
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.calibration import load_profile
    from hsi_xai_node.transports.config import load_config
    from test.ros.lifecycle_bringup import FRAME, LATE_FRAME, SEED

    _, outputs, _, _ = bringup
    gen = DriveGenerator(load_profile("hsi-drive"), seed=SEED, render_cameras=True)
    config = load_config(PARAMS, backend="ort-cpu", detector_model=str(tiny_detector))
    pipeline = Pipeline(config.pipeline_config(), *gen.references())
    np.testing.assert_array_equal(outputs["labels"], pipeline.process(gen.frame(FRAME).raw).labels)
    np.testing.assert_array_equal(outputs["late_labels"], pipeline.process(gen.frame(LATE_FRAME).raw).labels)
    cameras = gen.frame(FRAME).cameras
    offline = DetectionPipeline(config.detection_config()).process({n: cameras[n].image for n in ("rgb", "mir")})
    np.testing.assert_array_equal(outputs["detection_overlay"], offline.detection_overlay)


def test_old_frames_are_dropped_and_latency_is_reported_per_output(bringup):
    r, *_ = bringup
    p = r["active_diagnostics"]["hsi_xai: pipeline"]
    assert r["old_frame_processed"] is False and p["bad: older than max_input_age_s on arrival"] == "1"
    assert p["state"] == "active"
    try:  # foxglove_msgs has no pip wheel: where it is missing the node says so instead of publishing
        import foxglove_msgs  # noqa: F401
    except ImportError:
        assert p["foxglove_annotations"].startswith("not published: foxglove_msgs is not installed")
    else:
        assert p["foxglove_annotations"] == "published"
    # per output topic, from the input stamp to publication; only the outputs somebody subscribed to are published
    assert 0.0 < float(p["latency_ms labels"]) < 60_000.0 and "latency_ms segmentation" not in p
    det = r["active_diagnostics"]["hsi_xai: detection"]
    assert 0.0 < float(det["latency_ms detection/overlay"]) < 60_000.0

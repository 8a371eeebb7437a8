"""The node with real rclpy over DDS, inside a private network namespace on loopback only.

A publisher sends generated raw frames (and a bad one), the node (its own process, parameters
from config/hsi_xai.yaml, the file the launch file uses) processes them, a subscriber receives
every output; here each output is compared with the offline pipeline's result for the same frame.
"""

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


def _netns_prefix():
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare/ip not available: cannot make a private network namespace")
    flag = "-n" if os.geteuid() == 0 else "-rn"
    probe = subprocess.run(["unshare", flag, "sh", "-c", NETNS_SETUP + "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a private network namespace here: {probe.stderr.strip()}")
    return ["unshare", flag, "sh", "-c"]


@pytest.mark.parametrize("mode", ["", "rgb"], ids=["hsi-only", "rgb-synchronised"])
def test_node_over_dds_matches_the_offline_pipeline(tmp_path, mode):
    prefix = _netns_prefix()
    params = REPO / "config" / "hsi_xai.yaml"
    env = {**os.environ, "ROS_DOMAIN_ID": "77", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = NETNS_SETUP + f"exec {sys.executable} -m test.ros.dds_roundtrip {tmp_path} {params} {mode}"
    run = subprocess.run(prefix + [cmd], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    outputs = np.load(tmp_path / "outputs.npz")

    from hsi_xai_node.runtime import Pipeline
    from hsi_xai_node.scenes.drive import DriveGenerator
    from hsi_xai_node.sensor.calibration import load_profile
    from hsi_xai_node.transports.config import load_config

    gen = DriveGenerator(load_profile("hsi-drive"), seed=result["seed"], render_cameras=False)
    overrides = {"publish_class_maps": True, "explain_classes": ("road",)} if mode == "rgb" else {}
    pipeline = Pipeline(load_config(params, backend="ort-cpu", **overrides).pipeline_config(), *gen.references())
    for index, stamp in zip(result["frames"], result["sent"]):
        offline = pipeline.process(gen.frame(index).raw)
        for name in ("labels", "segmentation", "preview", "gradcam_overlay", "activation_overlay"):
            np.testing.assert_array_equal(outputs[f"{name}_{stamp}"], getattr(offline, name), err_msg=name)
        if mode == "rgb":  # the road class map as 32FC1, equal to the pipeline's float map
            road = next(c.channel for c in pipeline.card.classes if c.name == "road")
            np.testing.assert_array_equal(outputs[f"class_maps_road_{stamp}"],
                                          next(iter(offline.class_maps.values()))[road])
        assert result["frame_ids"][str(stamp)] == "hsi_camera"  # the input header, stamp and frame_id
    diag = result["diagnostics"]
    assert diag["bad: bad raw frame"] == "1" and diag["backend"] == "ort-cpu" and diag["references"] == "yes"
    assert int(diag["processed"]) == 2 and diag["model"] == "unet_bundled_25pn"
    if mode != "rgb":
        assert diag["bad: stamp went backwards"] == "1"

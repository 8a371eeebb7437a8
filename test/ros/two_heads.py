"""Runs inside a private network namespace (loopback only): two node processes, namespaces /left and /right, with
the shipped parameter file (relative topic names) and nothing else about topics.

    python -m test.ros.two_heads OUT_DIR PARAMS_YAML

Each head gets its own raw frame (different drives, different stamps) on /<head>/hsi/image_raw; a subscriber on /<head>/hsi_xai/segmentation of both heads records which stamps arrive
where, and the root names the nodes would have used without a namespace (/hsi/image_raw, /hsi_xai/...) are
watched too: nothing may appear there. Writes OUT_DIR/result.json.
"""

import json
import subprocess
import sys
from pathlib import Path

import rclpy
from sensor_msgs.msg import Image

from hsi_xai_node.ros.node import to_image
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile
from test.ros import harness
from test.ros.harness import stamp_of

HEADS = {"left": (2004, 0), "right": (2005, 3)}  # head -> (drive seed, frame index)


def main(out_dir: str, params: str) -> int:
    procs = [subprocess.Popen([sys.executable, "-m", "hsi_xai_node.ros.node", "--ros-args", "-r", f"__ns:=/{head}",
                               "--params-file", params, "-p", "backend:=ort-cpu", "-p", "input_qos:=reliable",
                               "-p", "detector_model:=''"]) for head in HEADS]
    rclpy.init()
    tester = rclpy.create_node("two_heads_tester")
    got = {head: [] for head in HEADS}
    stray = []
    pubs, subs = {}, []
    for head in HEADS:
        pubs[head] = {"image_raw": tester.create_publisher(Image, f"/{head}/hsi/image_raw", harness.RELIABLE)}
        subs.append(tester.create_subscription(Image, f"/{head}/hsi_xai/segmentation",
                                               lambda m, h=head: got[h].append(stamp_of(m.header)), harness.RELIABLE))
    subs.append(tester.create_subscription(Image, "/hsi_xai/segmentation",
                                           lambda m: stray.append(stamp_of(m.header)), harness.RELIABLE))
    root_raw = tester.create_publisher(Image, "/hsi/image_raw", harness.RELIABLE)
    try:
        assert harness.spin_until(tester, lambda: all(p["image_raw"].get_subscription_count() == 1
                                                      for p in pubs.values())
                                  and all(s.get_publisher_count() for s in subs[:2]), 90), \
            "the two nodes did not appear on the graph"
        sent = {}
        for head, (seed, index) in HEADS.items():
            # no references: the node segments uncalibrated frames too (and counts them), which is all this needs
            frame = DriveGenerator(load_profile("hsi-drive"), seed=seed, render_cameras=False).frame(index)
            pubs[head]["image_raw"].publish(to_image(frame.raw, "mono16",
                                                     harness.header(frame.stamp_ns, f"{head}_hsi_camera")))
            sent[head] = frame.stamp_ns
        assert harness.spin_until(tester, lambda: all(got[h] for h in HEADS), 90), f"outputs missing: {got}"
        harness.spin_until(tester, lambda: False, 1.0)  # anything stray has time to arrive
        (Path(out_dir) / "result.json").write_text(json.dumps({
            "sent": sent, "got": got, "stray": stray,
            "root_raw_subscribers": root_raw.get_subscription_count()}))
        return 0
    finally:
        tester.destroy_node()
        rclpy.shutdown()
        for p in procs:
            p.send_signal(2)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

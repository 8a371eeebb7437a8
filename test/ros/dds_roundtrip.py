"""Runs inside a private network namespace (loopback only): node process + publisher/subscriber.

    python -m test.ros.dds_roundtrip OUT_DIR PARAMS_YAML [rgb]

Starts the node as its own process with the given parameter file, publishes the dark/white
references and generated raw frames (a bad frame between two good ones), waits for every
output of every good frame and for /diagnostics to report the bad one, and writes what it
received to OUT_DIR (npz + json) for the test to check against the offline pipeline.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from hsi_xai_node.ros.node import to_image
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile
from hsi_xai_node.transports.messages import image_to_array

OUTPUTS = ("labels", "segmentation", "preview", "gradcam_overlay", "activation_overlay")
ROAD_MAP = "class_maps/road"
SEED, FRAMES = 2004, (0, 3)


def main(out_dir: str, params: str, mode: str = "") -> int:
    """mode "rgb": the node synchronises /rgb/image_raw with each raw frame (10 ms slop)."""
    out = Path(out_dir)
    extra = ["-p", "multispectral_topics:=['/rgb/image_raw']", "-p", "sync_slop_s:=0.01",
             "-p", "publish_class_maps:=true", "-p", "explain_classes:=['road']"] if mode == "rgb" else []
    node_proc = subprocess.Popen([sys.executable, "-m", "hsi_xai_node.ros.node", "--ros-args", "--params-file", params,
                                  "-p", "backend:=ort-cpu", "-p", "input_qos:=reliable", *extra])
    rclpy.init()
    tester = rclpy.create_node("hsi_xai_tester")
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    raw_pub = tester.create_publisher(Image, "/hsi/image_raw", reliable)
    dark_pub = tester.create_publisher(Image, "/hsi/dark_reference", latched)
    white_pub = tester.create_publisher(Image, "/hsi/white_reference", latched)
    rgb_pub = tester.create_publisher(Image, "/rgb/image_raw", reliable)
    topics = OUTPUTS + ((ROAD_MAP,) if mode == "rgb" else ())
    got: dict[str, dict[int, np.ndarray]] = {k: {} for k in topics}
    frame_ids: dict[int, str] = {}
    diags = []

    def keep(name):
        def cb(msg):
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            got[name][stamp] = image_to_array(msg, name).copy()
            frame_ids[stamp] = msg.header.frame_id
        return cb
    subs = [tester.create_subscription(Image, f"/hsi_xai/{n}", keep(n), reliable) for n in topics]
    tester.create_subscription(DiagnosticArray, "/diagnostics",
                               lambda m: diags.append({kv.key: kv.value for kv in m.status[0].values}), 10)

    def spin_until(cond, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not cond():
            rclpy.spin_once(tester, timeout_sec=0.05)
        return cond()

    try:
        assert spin_until(lambda: raw_pub.get_subscription_count() > 0 and all(s.get_publisher_count() for s in subs)
                          and (mode != "rgb" or rgb_pub.get_subscription_count() > 0), 60), \
            "the node did not appear on the graph"
        gen = DriveGenerator(load_profile("hsi-drive"), seed=SEED, render_cameras=False)
        dark, white = gen.references()
        t0 = gen.frame(0).stamp_ns
        header = Image().header
        header.frame_id = "hsi_camera"
        header.stamp.sec, header.stamp.nanosec = divmod(t0, 10**9)
        dark_pub.publish(to_image(dark, "mono16", header))
        white_pub.publish(to_image(white, "mono16", header))
        # 4.4 MB each over reliable DDS: wait until the node itself reports having both
        assert spin_until(lambda: any(d.get("references") == "yes" for d in diags), 60), "references not received"
        sent = []
        for k, index in enumerate(FRAMES):
            frame = gen.frame(index)
            header.stamp.sec, header.stamp.nanosec = divmod(frame.stamp_ns, 10**9)
            raw_pub.publish(to_image(frame.raw, "mono16", header))
            if mode == "rgb":  # its camera partner, 4 ms later: within the 10 ms slop
                header.stamp.nanosec += 4_000_000
                rgb_pub.publish(to_image(np.zeros((480, 640, 3), np.uint8), "bgr8", header))
            sent.append(frame.stamp_ns)
            assert spin_until(lambda s=frame.stamp_ns: all(s in got[n] for n in topics), 60), f"no outputs for frame {index}"
            if k == 0:  # a bad frame between the good ones: wrong encoding
                header.stamp.sec += 1
                raw_pub.publish(to_image(np.zeros((8, 8, 3), np.uint8), "bgr8", header))
            if k == 0 and mode == "rgb":  # a good raw frame whose camera partner never comes: not processed
                lonely = gen.frame(1)
                header.stamp.sec, header.stamp.nanosec = divmod(lonely.stamp_ns, 10**9)
                raw_pub.publish(to_image(lonely.raw, "mono16", header))
                spin_until(lambda: False, 1.0)
                assert lonely.stamp_ns not in got["labels"], "a raw frame without its camera was processed"
        if mode != "rgb":  # frame 0 again, with its older stamp: reported, not processed
            first = gen.frame(FRAMES[0])
            header.stamp.sec, header.stamp.nanosec = divmod(first.stamp_ns, 10**9)
            raw_pub.publish(to_image(first.raw, "mono16", header))

        def complete(d):  # diagnostics published after both good frames and the bad one(s)
            return (d.get("bad: bad raw frame") == "1" and d.get("processed") == str(len(FRAMES))
                    and (mode == "rgb" or d.get("bad: stamp went backwards") == "1"))
        assert spin_until(lambda: any(complete(d) for d in diags), 15), f"diagnostics never complete: {diags[-1:]}"
        np.savez(out / "outputs.npz", **{f"{n.replace('/', '_')}_{s}": a for n in topics for s, a in got[n].items()})
        (out / "result.json").write_text(json.dumps({"sent": sent, "frame_ids": {str(k): v for k, v in frame_ids.items()},
                                                     "frames": list(FRAMES), "seed": SEED,
                                                     "diagnostics": next(d for d in diags if complete(d))}))
        return 0
    finally:
        tester.destroy_node()
        rclpy.shutdown()
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(10)
        except subprocess.TimeoutExpired:
            node_proc.kill()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

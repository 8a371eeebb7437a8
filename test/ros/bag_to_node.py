"""Runs inside a private network namespace (loopback only): a bag's messages played to the node.

    python -m test.ros.bag_to_node OUT_DIR PARAMS_YAML BAG

Starts the node (detection off), publishes the bag's reference topics latched and its raw frames in log
order, as `ros2 bag play` would (the dark/white references first; each raw frame once the node has
processed or rejected the one before, so none is dropped as stale), and writes the node's last
"hsi_xai: pipeline" diagnostics to OUT_DIR/result.json for test_node.py to compare with the replay's
summary of the same bag.
"""

import json
import subprocess
import sys
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image

from hsi_xai_node.ros.node import to_image
from hsi_xai_node.transports import messages as m
from test.ros import harness


def main(out_dir: str, params: str, bag: str) -> int:
    node_proc = subprocess.Popen([sys.executable, "-m", "hsi_xai_node.ros.node", "--ros-args", "--params-file", params,
                                  "-p", "backend:=ort-cpu", "-p", "input_qos:=reliable", "-p", "detector_model:=''"])
    rclpy.init()
    tester = rclpy.create_node("hsi_xai_bag_player")
    reliable, latched = harness.RELIABLE, harness.LATCHED
    pubs = {"/hsi/image_raw": tester.create_publisher(Image, "/hsi/image_raw", reliable),
            "/hsi/dark_reference": tester.create_publisher(Image, "/hsi/dark_reference", latched),
            "/hsi/white_reference": tester.create_publisher(Image, "/hsi/white_reference", latched)}
    got = []
    sub = tester.create_subscription(Image, "/hsi_xai/labels", lambda msg: got.append(msg.header.stamp), reliable)
    diags = []
    tester.create_subscription(DiagnosticArray, "/diagnostics", lambda msg: diags.extend(
        {kv.key: kv.value for kv in s.values} for s in msg.status if s.name == "hsi_xai: pipeline"), 10)

    def spin_until(cond, timeout):
        return harness.spin_until(tester, cond, timeout)

    def handled():  # frames the node has processed or rejected so far
        last = diags[-1] if diags else {}
        return int(last.get("processed", 0)) + sum(int(v) for k, v in last.items() if k.startswith("bad: ")
                                                    and "reference" not in k)

    try:
        assert spin_until(lambda: pubs["/hsi/image_raw"].get_subscription_count() > 0 and sub.get_publisher_count(),
                          90), "the node did not appear on the graph"
        with Reader(bag) as reader:
            messages = [(c.topic, m.deserialize(d, c.msgtype)) for c, _, d in reader.messages()]
        raw_sent = 0
        for topic, msg in messages:
            image = m.image_to_array(msg) if msg.encoding == "mono16" else None
            out = to_image(image, msg.encoding, Image().header)
            out.header.frame_id = msg.header.frame_id
            out.header.stamp.sec, out.header.stamp.nanosec = msg.header.stamp.sec, msg.header.stamp.nanosec
            pubs[topic].publish(out)
            if topic == "/hsi/image_raw":
                raw_sent += 1
                assert spin_until(lambda: handled() >= raw_sent, 60), f"raw frame {raw_sent} not handled: {diags[-1:]}"
            elif not raw_sent:  # the first references: wait until the node holds the pair
                spin_until(lambda: diags and diags[-1].get("references") == "yes", 60)
            else:
                spin_until(lambda: False, 1.5)  # a later reference: give the node time to judge it
        spin_until(lambda: False, 1.5)  # one more diagnostics period
        (Path(out_dir) / "result.json").write_text(json.dumps({"diagnostics": diags[-1], "labels": len(got)}))
        return 0
    finally:
        harness.stop(tester, node_proc)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

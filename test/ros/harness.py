"""What the DDS test scripts (dds_roundtrip, bag_to_node, lifecycle_bringup) share: the QoS they talk with,
headers from nanosecond stamps, spinning until a condition holds, and stopping the node process."""

import subprocess
import time

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def stamp_of(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def header(stamp_ns: int, frame_id: str) -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = divmod(stamp_ns, 10**9)
    return h


def spin_until(node, cond, timeout: float) -> bool:
    """Spin `node` until cond() holds or `timeout` seconds pass; cond()'s last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        rclpy.spin_once(node, timeout_sec=0.05)
    return cond()


def stop(tester, node_proc: subprocess.Popen) -> None:
    """Tear down the tester and the ROS context, then stop the node process (SIGINT, killed after 10 s)."""
    import signal

    tester.destroy_node()
    rclpy.shutdown()
    node_proc.send_signal(signal.SIGINT)
    try:
        node_proc.wait(10)
    except subprocess.TimeoutExpired:
        node_proc.kill()

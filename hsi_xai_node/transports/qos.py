"""QoS profiles by name: one definition for the live node (rclpy) and the bags it is replayed from or into.

    sensor_data   best effort, volatile, keep last 5      the camera subscriptions' default (rclpy's
                                                          qos_profile_sensor_data)
    reliable      reliable, volatile, keep last 5         the output publishers' default
    latched       reliable, transient local, keep last 1  dark/white references and legends: a
                                                          subscriber that starts late still gets them
    diagnostics   reliable, volatile, keep last 10        /diagnostics
    camera        reliable, volatile, keep last 10        what the generated drive's camera driver
                                                          offers (matches both best-effort and
                                                          reliable subscribers on `ros2 bag play`)

A bag records, per topic, the QoS its publisher offered (`offered_qos_profiles`); `ros2 bag
play` offers the same again, so a latched topic recorded as latched reaches a node started after
the first second. `bag_qos` gives the rosbags object the bag writers record; the node builds its
rclpy profiles from the same table (`ros.node.rclpy_qos`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError


@dataclass(frozen=True)
class QosSpec:
    reliability: str  # "reliable" | "best_effort"
    durability: str   # "volatile" | "transient_local"
    depth: int        # keep last `depth`


PROFILES = {
    "sensor_data": QosSpec("best_effort", "volatile", 5),
    "reliable": QosSpec("reliable", "volatile", 5),
    "latched": QosSpec("reliable", "transient_local", 1),
    "diagnostics": QosSpec("reliable", "volatile", 10),
    "camera": QosSpec("reliable", "volatile", 10),
}
# the two a user may choose for the node's inputs and outputs (parameters input_qos / output_qos)
USER_CHOICES = ("sensor_data", "reliable")


def spec(name: str) -> QosSpec:
    if name not in PROFILES:
        raise InputError(f"QoS {name!r} is not one of {sorted(PROFILES)}")
    return PROFILES[name]


def bag_qos(name: str):
    """The rosbags `Qos` of profile `name`, as rosbag2 records it in `offered_qos_profiles`."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    s = spec(name)
    unset = QosTime(sec=0, nsec=0)  # rosbag2's "infinite / default" for deadline, lifespan, lease
    return Qos(history=QosHistory.KEEP_LAST, depth=s.depth,
               reliability=QosReliability.RELIABLE if s.reliability == "reliable" else QosReliability.BEST_EFFORT,
               durability=(QosDurability.TRANSIENT_LOCAL if s.durability == "transient_local"
                           else QosDurability.VOLATILE),
               deadline=unset, lifespan=unset, liveliness=QosLiveliness.AUTOMATIC,
               liveliness_lease_duration=unset, avoid_ros_namespace_conventions=False)

"""ROS 2 messages without a ROS install: sensor_msgs/Image <-> numpy, diagnostics, detections.

Uses the `rosbags` type store (ROS 2 Jazzy definitions); vision_msgs, which it does not
ship, is registered from its .msg text (vision_msgs 4.x, as on Humble and Jazzy). The same
conversions serve the replay and the rclpy node, so both publish identical messages.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import FrameError

# encoding -> (numpy dtype, channels); big-endian data is rejected (no camera here sends it)
ENCODINGS = {
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
    "bgr8": (np.uint8, 3), "rgb8": (np.uint8, 3), "8UC3": (np.uint8, 3), "32FC1": (np.float32, 1),
}

VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": ("vision_msgs/ObjectHypothesis hypothesis\n"
                                                 "geometry_msgs/PoseWithCovariance pose\n"),
    "vision_msgs/msg/Detection2D": ("std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
                                    "vision_msgs/BoundingBox2D bbox\nstring id\n"),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}


@lru_cache(maxsize=1)
def typestore():
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg

    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def header(stamp_ns: int, frame_id: str):
    t = typestore().types
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=int(stamp_ns // 1_000_000_000),
                                                                          nanosec=int(stamp_ns % 1_000_000_000)),
                                    frame_id=frame_id)


def stamp_ns(hdr) -> int:
    return int(hdr.stamp.sec) * 1_000_000_000 + int(hdr.stamp.nanosec)


def image_to_array(msg, what: str = "image", expect_encodings: tuple[str, ...] | None = None) -> np.ndarray:
    """The pixels of a sensor_msgs/Image as an array view, after checking encoding and sizes."""
    enc = msg.encoding
    if enc not in ENCODINGS or (expect_encodings and enc not in expect_encodings):
        want = expect_encodings or tuple(ENCODINGS)
        raise FrameError(f"{what}: encoding {enc!r} is not supported here (expected one of {list(want)})")
    if msg.is_bigendian:
        raise FrameError(f"{what}: big-endian image data is not supported")
    dtype, channels = ENCODINGS[enc]
    row = msg.width * channels * np.dtype(dtype).itemsize
    if msg.step < row:
        raise FrameError(f"{what}: step {msg.step} is smaller than a {msg.width}-pixel {enc} row ({row} bytes)")
    data = np.asarray(msg.data, dtype=np.uint8)
    if data.size != msg.step * msg.height:
        raise FrameError(f"{what}: {data.size} data bytes for {msg.height} rows of step {msg.step} "
                         f"({msg.step * msg.height} expected): truncated or padded message")
    rows = data.reshape(msg.height, msg.step)[:, :row]
    image = np.ascontiguousarray(rows).view(dtype).reshape(msg.height, msg.width, channels)
    return image[..., 0] if channels == 1 else image


# a camera the stack expects as the key may publish any of these (same pixels, another name)
CAMERA_ENCODINGS = {"bgr8": ("bgr8",), "rgb8": ("rgb8",), "mono8": ("mono8", "8UC1"), "mono16": ("mono16", "16UC1")}


def camera_image(msg, what: str, encoding: str, width: int, height: int) -> np.ndarray:
    """The pixels of a camera's sensor_msgs/Image, checked against what the rig says the camera gives.

    A FrameError carries `.reason`: "wrong encoding", "truncated or inconsistent image data" or
    "wrong frame size" (the node and the replay count bad camera frames by it)."""
    try:
        image = image_to_array(msg, what, CAMERA_ENCODINGS.get(encoding, (encoding,)))
    except FrameError as exc:
        exc.reason = ("wrong encoding" if msg.encoding not in CAMERA_ENCODINGS.get(encoding, (encoding,))
                      or msg.is_bigendian else "truncated or inconsistent image data")
        raise
    if image.shape[:2] != (height, width):
        exc = FrameError(f"{what}: {msg.width}x{msg.height} image, the rig's camera is {width}x{height}")
        exc.reason = "wrong frame size"
        raise exc
    return image


def array_to_image(array: np.ndarray, encoding: str, hdr):
    """A sensor_msgs/Image holding `array` (rows, cols[, channels]) with the given header."""
    dtype, channels = ENCODINGS[encoding]
    a = np.ascontiguousarray(array, dtype=dtype)
    if (a.ndim == 2 and channels != 1) or (a.ndim == 3 and a.shape[2] != channels) or a.ndim not in (2, 3):
        raise FrameError(f"array of shape {a.shape} cannot be a {encoding} image")
    h, w = a.shape[:2]
    return typestore().types["sensor_msgs/msg/Image"](
        header=hdr, height=h, width=w, encoding=encoding, is_bigendian=0,
        step=w * channels * a.itemsize, data=a.view(np.uint8).reshape(-1))


def diagnostic_array(hdr, name: str, hardware_id: str, level: int, message: str, values: dict):
    """A diagnostic_msgs/DiagnosticArray with one status (level 0 OK, 1 WARN, 2 ERROR)."""
    t = typestore().types
    status = t["diagnostic_msgs/msg/DiagnosticStatus"](
        level=int(level), name=name, message=message, hardware_id=hardware_id,
        values=[t["diagnostic_msgs/msg/KeyValue"](key=str(k), value=str(v)) for k, v in values.items()])
    return t["diagnostic_msgs/msg/DiagnosticArray"](header=hdr, status=[status])


def serialize(msg) -> bytes:
    return bytes(typestore().serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes, msgtype: str):
    return typestore().deserialize_cdr(data, msgtype)

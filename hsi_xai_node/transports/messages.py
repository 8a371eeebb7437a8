"""ROS 2 messages without a ROS install: sensor_msgs/Image <-> numpy, diagnostics, detections.

Uses the `rosbags` type store (ROS 2 Jazzy definitions); vision_msgs and foxglove_msgs, which it
does not ship, are registered from their .msg text (vision_msgs 4.x, as on Humble and Jazzy;
foxglove_msgs as transports.annotations gives it). The same
conversions serve the replay and the rclpy node, so both publish identical messages.
"""

from __future__ import annotations

from dataclasses import dataclass
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

    from .annotations import FOXGLOVE_MSGS

    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for name, text in {**VISION_MSGS, **FOXGLOVE_MSGS}.items():
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
    """The pixels of a camera's sensor_msgs/Image or CompressedImage, checked against what the rig says the
    camera gives.

    A FrameError carries `.reason`: "wrong encoding", "truncated or inconsistent image data", "wrong frame
    size" or, compressed, "unsupported compression" / "undecodable compressed image" (the node and the replay
    count bad camera frames by it)."""
    encodings = CAMERA_ENCODINGS.get(encoding, (encoding,))
    if hasattr(msg, "format"):  # sensor_msgs/CompressedImage
        image = compressed_to_array(msg, what, encodings, size=(width, height))
    else:
        try:
            image = image_to_array(msg, what, encodings)
        except FrameError as exc:
            exc.reason = ("wrong encoding" if msg.encoding not in encodings
                          or msg.is_bigendian else "truncated or inconsistent image data")
            raise
    if image.shape[:2] != (height, width):
        exc = FrameError(f"{what}: {image.shape[1]}x{image.shape[0]} image, the rig's camera is {width}x{height}")
        exc.reason = "wrong frame size"
        raise exc
    return image


COMPRESSED = "sensor_msgs/msg/CompressedImage"
COMPRESSED_SUFFIX = "/compressed"  # image_transport's name for a topic's compressed form
# encoding a decoded image stands for: (dtype, channels) -> encodings it satisfies
_DECODED = {(np.uint8, 3): ("bgr8",), (np.uint8, 1): ("mono8", "8UC1"), (np.uint16, 1): ("mono16", "16UC1")}


def transport_topic(topics, topic: str, transport: str) -> str | None:
    """Where a bag or graph carries the images of `topic`: `topic` itself (sensor_msgs/Image) or, following
    image_transport's naming, `topic`/compressed (CompressedImage). The configured transport ("raw" or
    "compressed") is tried first, the other form second; None when `topics` holds neither."""
    forms = [topic, topic.rstrip("/") + COMPRESSED_SUFFIX]
    for candidate in (forms if transport == "raw" else forms[::-1]):
        if candidate in topics:
            return candidate
    return None


def compressed_codec(fmt: str) -> str | None:
    """"png" or "jpeg" from a CompressedImage format ("jpeg", "png", "bgr8; jpeg compressed bgr8", ...)."""
    f = fmt.lower()
    return "png" if "png" in f else "jpeg" if ("jpeg" in f or "jpg" in f) else None


# PNG colour type -> channels OpenCV decodes it to with IMREAD_UNCHANGED (palette: colour; alpha: dropped later)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class ImageHeader:
    codec: str
    width: int
    height: int
    dtype: type  # what OpenCV decodes the samples to
    channels: int  # after OpenCV's decoding, before an alpha channel is dropped


def image_header(data: bytes, codec: str) -> ImageHeader | None:
    """Size and sample type a PNG or JPEG declares, read from its header without decoding (None: no header
    found): so a 390-byte file declaring 40000x40000 is refused before OpenCV allocates 1.6 GB for it."""
    if codec == "png":
        if len(data) < 29 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
            return None
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        depth, colour = data[24], data[25]
        if colour not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
            return None
        return ImageHeader("png", width, height, np.uint16 if depth == 16 else np.uint8, _PNG_CHANNELS[colour])
    i = 2
    if data[:2] != b"\xff\xd8":
        return None
    while i + 4 <= len(data):  # marker segments up to the frame header (SOFn)
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 10 > len(data) or data[i + 4] != 8:  # 8-bit samples only
                return None
            height, width = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            components = data[i + 9]
            return ImageHeader("jpeg", width, height, np.uint8, 1 if components == 1 else 3)
        if length < 2:
            return None
        i += 2 + length
    return None


def compressed_to_array(msg, what: str, encodings: tuple[str, ...], lossless: bool = False,
                        size: tuple[int, int] | None = None) -> np.ndarray:
    """The pixels of a sensor_msgs/CompressedImage (JPEG or PNG, 16-bit PNG for thermal cameras), decoded with
    OpenCV and checked against the encodings the consumer takes (colour images decode as bgr8) and, when given,
    the (width, height) it must have. Size and sample type are read from the file's header and checked first,
    so no pixel buffer is allocated for an image that would be refused. A FrameError carries `.reason`:
    "unsupported compression" (or lossy where `lossless` is required), "undecodable compressed image",
    "wrong frame size" or "wrong encoding"."""
    def fail(reason: str, text: str):
        exc = FrameError(f"{what}: {text}")
        exc.reason = reason
        return exc
    codec = compressed_codec(msg.format)
    if codec is None:
        raise fail("unsupported compression", f"format {msg.format!r} is neither jpeg nor png")
    if lossless and codec != "png":
        raise fail("unsupported compression", f"format {msg.format!r}: {codec} is lossy, this input takes png only")
    data = np.asarray(msg.data, dtype=np.uint8).reshape(-1)
    header = image_header(data[:65536].tobytes(), codec)
    if header is None:
        raise fail("undecodable compressed image", f"{data.size} bytes without a readable {codec} header")
    if size is not None and (header.width, header.height) != tuple(size):
        raise fail("wrong frame size", f"{codec} header declares {header.width}x{header.height}, the image must be "
                                       f"{size[0]}x{size[1]} (not decoded)")
    kind = (header.dtype, 1 if header.channels == 1 else 3)
    if not (set(_DECODED.get(kind, ())) | ({"rgb8"} if kind == (np.uint8, 3) else set())) & set(encodings):
        raise fail("wrong encoding", f"{codec} header declares {np.dtype(header.dtype).name} x {header.channels} "
                                     f"channel(s), expected {list(encodings)} (not decoded)")
    import cv2

    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.shape[:2] != (header.height, header.width):
        raise fail("undecodable compressed image", f"{len(msg.data)} bytes of {codec} data that OpenCV cannot decode")
    if image.ndim == 3 and image.shape[2] == 4:  # a PNG with alpha: the colour is what counts
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    kind = (image.dtype.type, 1 if image.ndim == 2 else image.shape[2])
    if kind == (np.uint8, 3) and "rgb8" in encodings:  # OpenCV decodes colour as BGR
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    got = _DECODED.get(kind, ())
    if not set(got) & set(encodings):
        raise fail("wrong encoding", f"{codec} decodes to {image.dtype.name} x {kind[1]} channel(s), expected "
                                     f"{list(encodings)}")
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


def camera_info_message(model, hdr):
    """A sensor_msgs/CameraInfo with the numbers of a sensor.camera_model.CameraModel and the given header."""
    t = typestore().types
    x, y, w, h = model.roi
    return t["sensor_msgs/msg/CameraInfo"](
        header=hdr, height=int(model.height), width=int(model.width), distortion_model=model.distortion_model,
        d=np.asarray(model.D, np.float64), k=np.asarray(model.K, np.float64).ravel(),
        r=np.asarray(model.R, np.float64).ravel(), p=np.asarray(model.P, np.float64).ravel(),
        binning_x=int(model.binning_x), binning_y=int(model.binning_y),
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=x, y_offset=y, height=h, width=w, do_rectify=False))


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

"""One rule for raw mosaic messages, shared by the node and the replay: what is a bad frame, and why.

    gate = RawFrameGate((1088, 2048))
    raw = gate.accept(msg, where)     # the frame as a uint16 array, or FrameError with `.reason`

Reasons (the node's /diagnostics keys "bad: <reason>" and the replay's summary use the same words):

    stamp not after the previous frame's   the header stamp goes backwards or repeats (a replayed bag
                                           out of order, a driver restart, a duplicated message)
    wrong encoding                         not mono16 / 16UC1, or big-endian
    truncated or inconsistent image data   step, size and data disagree
    wrong frame size                       not the sensor's frame size
    unsupported compression                a CompressedImage that is not PNG (JPEG would blur the mosaic)
    undecodable compressed image           PNG data OpenCV cannot decode

The stamp is checked first, and only an accepted frame moves the last stamp on, so one bad
message never makes the next good one look out of order.
"""

from __future__ import annotations

import numpy as np

from ..errors import FrameError
from .messages import compressed_to_array, image_to_array, stamp_ns

RAW_ENCODINGS = ("mono16", "16UC1")
STAMP_ORDER = "stamp not after the previous frame's"


def _fail(reason: str, message: str) -> FrameError:
    exc = FrameError(message)
    exc.reason = reason
    return exc


class RawFrameGate:
    def __init__(self, frame_shape: tuple[int, int]):
        self.frame_shape = tuple(frame_shape)
        self.last_stamp: int | None = None

    def accept(self, msg, where: str) -> np.ndarray:
        stamp = stamp_ns(msg.header)
        if self.last_stamp is not None and stamp <= self.last_stamp:
            raise _fail(STAMP_ORDER, f"{where}: stamp {stamp} ns is not after the previous frame's "
                                     f"{self.last_stamp} ns")
        if hasattr(msg, "format"):  # sensor_msgs/CompressedImage: 16-bit PNG only (lossless)
            image = compressed_to_array(msg, where, RAW_ENCODINGS, lossless=True,
                                        size=(self.frame_shape[1], self.frame_shape[0]))
        else:
            try:
                image = image_to_array(msg, where, RAW_ENCODINGS)
            except FrameError as exc:
                exc.reason = ("wrong encoding" if msg.encoding not in RAW_ENCODINGS or msg.is_bigendian
                              else "truncated or inconsistent image data")
                raise
        if image.shape != self.frame_shape:
            raise _fail("wrong frame size", f"{where}: frame is {image.shape[0]}x{image.shape[1]}, the sensor's is "
                                            f"{self.frame_shape[0]}x{self.frame_shape[1]}")
        self.last_stamp = stamp
        return image

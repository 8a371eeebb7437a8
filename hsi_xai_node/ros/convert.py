"""rclpy message conversions of the library's results: the same numbers the replay writes into bags.

vision_msgs and foxglove_msgs have no pip wheels: each is imported lazily, and without it the node
logs one warning and says on /diagnostics what it does not publish.
"""

from __future__ import annotations

import os

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from ..transports.annotations import annotations_message
from ..transports.outputs import detection_fields
from ..transports.qos import spec as qos_spec


def qos(kind: str) -> QoSProfile:
    """The rclpy profile of a named QoS (transports.qos: the same table the bags are recorded with)."""
    s = qos_spec(kind)
    return QoSProfile(depth=s.depth, history=HistoryPolicy.KEEP_LAST,
                      reliability=ReliabilityPolicy.RELIABLE if s.reliability == "reliable"
                      else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if s.durability == "transient_local"
                      else DurabilityPolicy.VOLATILE)


_DISTRO = os.environ.get("ROS_DISTRO") or "$ROS_DISTRO"
VISION_MSGS_MISSING = f"not published: vision_msgs is not installed (apt install ros-{_DISTRO}-vision-msgs)"
FOXGLOVE_MSGS_MISSING = f"not published: foxglove_msgs is not installed (apt install ros-{_DISTRO}-foxglove-msgs)"


def to_image(array: np.ndarray, encoding: str, header) -> Image:
    msg = Image(header=header, height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=0)
    a = np.ascontiguousarray(array)
    msg.step = a.strides[0]
    msg.data = a.tobytes()
    return msg


def to_camera_info(model, header) -> CameraInfo:
    """sensor_msgs/CameraInfo of a sensor.camera_model.CameraModel (the replay's camera_info_message in rclpy)."""
    msg = CameraInfo(header=header, height=int(model.height), width=int(model.width),
                     distortion_model=model.distortion_model, d=[float(v) for v in model.D],
                     k=np.asarray(model.K, np.float64).ravel().tolist(), r=np.asarray(model.R, np.float64).ravel().tolist(),
                     p=np.asarray(model.P, np.float64).ravel().tolist(),
                     binning_x=int(model.binning_x), binning_y=int(model.binning_y))
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = (int(v) for v in model.roi)
    return msg


def vision_msgs():
    """The vision_msgs.msg module, or None when it is not installed (it has no pip wheel)."""
    try:
        from vision_msgs import msg
    except ImportError:
        return None
    return msg


def foxglove_msgs():
    """The foxglove_msgs.msg module, or None when it is not installed (it has no pip wheel)."""
    try:
        from foxglove_msgs import msg
    except ImportError:
        return None
    return msg


def to_annotations(fm, stamp, polygons, labels=()):
    """foxglove_msgs/ImageAnnotations from the plain polygons and labels (transports.annotations), as the replay
    builds them from the rosbags types."""
    return annotations_message(lambda name: getattr(fm, name), stamp, polygons, labels)


def to_detection_array(result, header, vm):
    """vision_msgs/Detection2DArray of a DetectionResult, from the same numbers as the replay's message."""
    out = vm.Detection2DArray(header=header)
    for f in detection_fields(result):
        d = vm.Detection2D(header=header, id=f.id)
        d.bbox.size_x, d.bbox.size_y = f.size_x, f.size_y
        centre = d.bbox.center
        if hasattr(centre, "position"):  # vision_msgs 4.x (Humble on): Pose2D with a Point2D
            centre.position.x, centre.position.y = f.center_x, f.center_y
        else:  # 3.x: geometry_msgs/Pose2D
            centre.x, centre.y = f.center_x, f.center_y
        hypothesis = vm.ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = f.class_id, f.score
        d.results.append(hypothesis)
        out.detections.append(d)
    return out



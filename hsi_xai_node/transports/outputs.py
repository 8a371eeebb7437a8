"""What the node publishes for one frame, by output name: one definition for the node and the replay.

Segmentation (per raw frame, the raw frame's header):

    <ns>/labels, segmentation, preview, gradcam_overlay, activation_overlay   sensor_msgs/Image
    <ns>/focus_overlay                                       sensor_msgs/Image bgr8 (with focus_class)
    <ns>/class_maps/<class>                                                   sensor_msgs/Image 32FC1

Camera info (per raw frame, the raw frame's header; image_transport's rule: beside an image, its camera_info):

    <ns>/camera_info              sensor_msgs/CameraInfo of the images above (the cube grid)
    <ns>/class_maps/camera_info   sensor_msgs/CameraInfo of the class maps (the model's window of it)

    The mosaic camera's own camera_info (`hsi/camera_info` beside `hsi/image_raw`) through the cube's
    binning and crop (sensor.camera_model); without one, the geometry alone (K = 0, binning and roi).

Legends (latched; sent when they change, at most once a second: once with card scales):

    <ns>/<overlay>/legend    sensor_msgs/Image bgr8: colour bar, what 1 means per class, the scale

Detection (per synchronised camera set, the primary camera's header, i.e. the detector's first camera):

    <ns>/detections          vision_msgs/Detection2DArray: one Detection2D per detection, its bbox in the
                             primary camera's pixels (the frame the header names), pixel-edge
                             coordinates (the image spans 0..width, 0..height): center = midpoint of the
                             box edges, size = edge-to-edge extent; results = one ObjectHypothesisWithPose
                             (class_id = class name, score); id = the detection's slot (its row of the
                             per-box maps, "0" is the best-scoring one)
    <ns>/detection/overlay   sensor_msgs/Image bgr8: the primary camera's image (overlay_zoom x larger), each
                             explained box's map around it, the boxes (the Detection2DArray's, zoomed)
    <ns>/detection/camera_info  sensor_msgs/CameraInfo of the overlay: the primary camera's (its topic's
                             sibling camera_info) through the zoom; its geometry alone without it

`detection_fields` gives the numbers of each Detection2D; the replay's rosbags message
(`detection_array`) and the node's rclpy message are both built from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# output name (under the output namespace) -> sensor_msgs/Image encoding
IMAGE_OUTPUTS = {"labels": "mono8", "segmentation": "bgr8", "preview": "bgr8",
                 "gradcam_overlay": "bgr8", "activation_overlay": "bgr8", "focus_overlay": "bgr8"}
LEGEND = "legend"  # <overlay>/legend
DETECTION_OVERLAY = "detection/overlay"  # in its own namespace, so that its camera_info can sit beside it
DETECTION_IMAGE_OUTPUTS = {DETECTION_OVERLAY: "bgr8"}
DETECTION_CAMERA_INFO = "detection/camera_info"
DETECTIONS = "detections"  # output name of the vision_msgs/Detection2DArray
DETECTIONS_MSGTYPE = "vision_msgs/msg/Detection2DArray"


def output_names(card, class_maps: bool, focus: bool = False) -> list[str]:
    """Every image output name, per-class maps (`class_maps/<class>`) included when enabled."""
    names = [n for n in IMAGE_OUTPUTS if focus or n != "focus_overlay"]
    return [*names, *([f"class_maps/{c.name}" for c in card.classes] if class_maps else [])]


def legend_name(overlay: str) -> str:
    return f"{overlay}/{LEGEND}"


class LegendSchedule:
    """When to send a legend again: when its picture changed, and at most once per `period_ns`
    (card scales: only once; running scales drift slowly)."""

    def __init__(self, period_ns: int = 1_000_000_000):
        self.period_ns, self._last = period_ns, {}

    def due(self, name: str, image: np.ndarray, t_ns: int) -> bool:
        digest = hash(image.tobytes())
        last = self._last.get(name)
        if last is not None and (last[0] == digest or t_ns - last[1] < self.period_ns):
            return False
        self._last[name] = (digest, t_ns)
        return True


def output_images(result, card, class_maps: bool) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (array, encoding) for the outputs this frame has (overlays only when computed)."""
    out = {name: (getattr(result, name), enc) for name, enc in IMAGE_OUTPUTS.items()
           if getattr(result, name) is not None}
    if class_maps and result.class_maps:  # the first float map (K, h, w), one 32FC1 image per class
        maps = next(iter(result.class_maps.values()))
        out |= {f"class_maps/{c.name}": (maps[c.channel].astype(np.float32), "32FC1") for c in card.classes}
    return out


CAMERA_INFO = "camera_info"
CAMERA_INFO_MSGTYPE = "sensor_msgs/msg/CameraInfo"


def camera_info_topic(image_topic: str) -> str:
    """image_transport's name for the camera_info of an image topic: its sibling `camera_info`."""
    head = image_topic.rstrip("/").rsplit("/", 1)[0] if "/" in image_topic.rstrip("/") else ""
    return f"{head}/{CAMERA_INFO}" if head or image_topic.startswith("/") else CAMERA_INFO


def segmentation_grids(pipeline, class_maps: bool) -> dict:
    """camera_info output name -> where those images lie in the mosaic camera's pixels (PixelMap)."""
    grids = {CAMERA_INFO: pipeline.output_pixels()}
    if class_maps:
        grids[f"class_maps/{CAMERA_INFO}"] = pipeline.output_pixels(window=True)
    return grids


def detection_grids(detector) -> dict:
    """camera_info output name -> where the detection overlay lies in the primary camera's pixels."""
    return {DETECTION_CAMERA_INFO: detector.overlay_pixels()}


class CameraInfoInput:
    """A camera's latest camera_info, checked against its frames (one line naming the problem when it does not
    fit them: that one is not used), and the camera_info of each output image made from its pixels."""

    def __init__(self, frame_width: int, frame_height: int, topic: str):
        self.size, self.topic = (frame_width, frame_height), topic
        self.model = None  # sensor.camera_model.CameraModel of the last good message
        self.received = 0

    def update(self, msg) -> None:
        """Take a sensor_msgs/CameraInfo (rclpy or rosbags); raises FrameError (reason "bad camera_info")."""
        from ..errors import FrameError
        from ..sensor.camera_model import from_camera_info

        self.received += 1
        try:
            self.model = from_camera_info(msg, *self.size, what=self.topic)
        except FrameError as exc:
            exc.reason = "bad camera_info"
            raise

    def outputs(self, grids: dict) -> dict:
        """output name -> CameraModel, for `grids` (output name -> PixelMap: segmentation_grids, detection_grids)."""
        from ..sensor.camera_model import uncalibrated

        model = self.model
        return {name: model.through(px) if model is not None and model.calibrated else uncalibrated(px)
                for name, px in grids.items()}

    def describe(self) -> str:
        if self.model is not None and self.model.calibrated:
            return f"from {self.topic}"
        if self.model is not None:
            return f"{self.topic} says uncalibrated (K = 0): outputs' camera_info carry their geometry only"
        return f"none received on {self.topic}: outputs' camera_info carry their geometry only (K = 0)"


# --- detection -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectionFields:
    """The numbers of one vision_msgs/Detection2D."""

    center_x: float   # bbox.center.position.x, primary camera pixels
    center_y: float   # bbox.center.position.y
    size_x: float     # bbox.size_x
    size_y: float     # bbox.size_y
    class_id: str     # results[0].hypothesis.class_id: the class name
    score: float      # results[0].hypothesis.score
    id: str           # the detection's slot


def detection_fields(result) -> list[DetectionFields]:
    """One DetectionFields per detection of a runtime.detection.DetectionResult, from its camera_box."""
    out = []
    for d in result.detections:
        x0, y0, x1, y1 = (float(v) for v in d.camera_box)
        out.append(DetectionFields((x0 + x1) / 2.0, (y0 + y1) / 2.0, x1 - x0, y1 - y0, str(d.class_name),
                                   float(d.score), str(d.slot)))
    return out


def detection_images(result) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (array, encoding) of the detection image outputs."""
    return {DETECTION_OVERLAY: (result.detection_overlay, DETECTION_IMAGE_OUTPUTS[DETECTION_OVERLAY])}


def detection_array(result, hdr):
    """The vision_msgs/Detection2DArray of a detection result as a rosbags message (header `hdr`)."""
    from .messages import typestore

    t = typestore().types
    pose = t["geometry_msgs/msg/PoseWithCovariance"](
        pose=t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                         orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
        covariance=np.zeros(36, np.float64))
    detections = [t["vision_msgs/msg/Detection2D"](
        header=hdr,
        results=[t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=f.class_id, score=f.score), pose=pose)],
        bbox=t["vision_msgs/msg/BoundingBox2D"](
            center=t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=f.center_x, y=f.center_y),
                                               theta=0.0),
            size_x=f.size_x, size_y=f.size_y),
        id=f.id) for f in detection_fields(result)]
    return t[DETECTIONS_MSGTYPE](header=hdr, detections=detections)

"""Foxglove image annotations of the outputs: what Foxglove's Image panel draws over a camera image.

    <ns>/detection_annotations     foxglove_msgs/ImageAnnotations on the primary camera's image (its pixels,
                                   its header stamp): each detection's box (a closed line in its class
                                   colour) and its label ("car 0.87")
    <ns>/segmentation_annotations  foxglove_msgs/ImageAnnotations on the HSI images (<ns>/preview,
                                   <ns>/segmentation; cube pixels, the raw frame's stamp): each predicted
                                   class region's outline in the class colour

The replay writes both into every output bag (rosbags knows foxglove_msgs from the .msg text below);
the node publishes them when `publish_foxglove_annotations` is on and foxglove_msgs is installed.
Both are built from the same plain data (`detection_annotations`, `segmentation_annotations`), so they
carry the same numbers. Coordinates: the top-left corner of the top-left pixel is (0, 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..classes import DETECTION_CLASSES, SEGMENTATION_CLASSES

ANNOTATIONS_MSGTYPE = "foxglove_msgs/msg/ImageAnnotations"
DETECTION_ANNOTATIONS, SEGMENTATION_ANNOTATIONS = "detection_annotations", "segmentation_annotations"

# foxglove_msgs (ROS 2), field order as the Foxglove schemas define them
FOXGLOVE_MSGS = {
    "foxglove_msgs/msg/Point2": "float64 x\nfloat64 y\n",
    "foxglove_msgs/msg/Color": "float64 r\nfloat64 g\nfloat64 b\nfloat64 a\n",
    "foxglove_msgs/msg/CircleAnnotation": ("builtin_interfaces/Time timestamp\nfoxglove_msgs/Point2 position\n"
                                           "float64 diameter\nfloat64 thickness\nfoxglove_msgs/Color fill_color\n"
                                           "foxglove_msgs/Color outline_color\n"),
    "foxglove_msgs/msg/PointsAnnotation": ("uint8 UNKNOWN=0\nuint8 POINTS=1\nuint8 LINE_LOOP=2\nuint8 LINE_STRIP=3\n"
                                           "uint8 LINE_LIST=4\nbuiltin_interfaces/Time timestamp\nuint8 type\n"
                                           "foxglove_msgs/Point2[] points\nfoxglove_msgs/Color outline_color\n"
                                           "foxglove_msgs/Color[] outline_colors\nfoxglove_msgs/Color fill_color\n"
                                           "float64 thickness\n"),
    "foxglove_msgs/msg/TextAnnotation": ("builtin_interfaces/Time timestamp\nfoxglove_msgs/Point2 position\n"
                                         "string text\nfloat64 font_size\nfoxglove_msgs/Color text_color\n"
                                         "foxglove_msgs/Color background_color\n"),
    "foxglove_msgs/msg/ImageAnnotations": ("foxglove_msgs/CircleAnnotation[] circles\n"
                                           "foxglove_msgs/PointsAnnotation[] points\n"
                                           "foxglove_msgs/TextAnnotation[] texts\n"),
}
LINE_LOOP = 2
MIN_REGION_PX = 16  # smaller class regions get no outline (noise, and message size)
OUTLINE_TOLERANCE_PX = 1.0  # outlines simplified to within this many pixels (Douglas-Peucker)


@dataclass(frozen=True)
class Polygon:
    points: tuple[tuple[float, float], ...]  # a closed line (LINE_LOOP)
    rgba: tuple[float, float, float, float]


@dataclass(frozen=True)
class Label:
    position: tuple[float, float]  # bottom-left of the text
    text: str
    rgba: tuple[float, float, float, float]


def _rgba(bgr) -> tuple[float, float, float, float]:
    b, g, r = bgr
    return (r / 255.0, g / 255.0, b / 255.0, 1.0)


def detection_annotations(result) -> tuple[list[Polygon], list[Label]]:
    """Boxes and labels of a runtime.detection.DetectionResult, in the primary camera's pixels."""
    colours = {c.name: _rgba(c.bgr) for c in DETECTION_CLASSES}
    polygons, labels = [], []
    for d in result.detections:
        x0, y0, x1, y1 = (float(v) for v in d.camera_box)
        rgba = colours.get(d.class_name, (1.0, 1.0, 1.0, 1.0))
        polygons.append(Polygon(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), rgba))
        labels.append(Label((x0, max(y0 - 2.0, 0.0)), f"{d.class_name} {d.score:.2f}", rgba))
    return polygons, labels


def segmentation_annotations(labels: np.ndarray) -> list[Polygon]:
    """Outlines of each class region of a label image (class ids), simplified, in the class colour."""
    polygons = []
    for c in SEGMENTATION_CLASSES:
        if c.id == 0:
            continue
        mask = (labels == c.id).astype(np.uint8)
        if not mask.any():
            continue
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            if cv2.contourArea(contour) < MIN_REGION_PX:
                continue
            simple = cv2.approxPolyDP(contour, OUTLINE_TOLERANCE_PX, True)[:, 0]
            # pixel centres: contour points are pixel indices, the annotation frame has 0 at the pixel's corner
            polygons.append(Polygon(tuple((float(x) + 0.5, float(y) + 0.5) for x, y in simple), _rgba(c.bgr)))
    return polygons


def annotations_message(types, stamp, polygons: list[Polygon], labels: list[Label] = (), thickness: float = 2.0,
                        font_size: float = 14.0):
    """foxglove_msgs/ImageAnnotations built with `types(name)` -> message class ("Point2", "Color", ...): the
    rosbags type store's classes for the replay, foxglove_msgs.msg's for the node. `stamp` is the input's."""
    point, colour = types("Point2"), types("Color")
    clear = colour(r=0.0, g=0.0, b=0.0, a=0.0)

    def rgba(c):
        return colour(r=c[0], g=c[1], b=c[2], a=c[3])
    return types("ImageAnnotations")(
        circles=[],
        points=[types("PointsAnnotation")(timestamp=stamp, type=LINE_LOOP,
                                          points=[point(x=x, y=y) for x, y in p.points], outline_color=rgba(p.rgba),
                                          outline_colors=[], fill_color=clear, thickness=thickness)
                for p in polygons],
        texts=[types("TextAnnotation")(timestamp=stamp, position=point(x=lb.position[0], y=lb.position[1]),
                                       text=lb.text, font_size=font_size, text_color=rgba(lb.rgba),
                                       background_color=colour(r=0.0, g=0.0, b=0.0, a=0.6))
               for lb in labels])

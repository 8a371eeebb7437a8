"""Replay of bags whose cameras (and mosaic) were recorded compressed, and the Foxglove annotations in the output.

Compressed bags are made from a real drive bag by encoding each camera message with OpenCV onto
<topic>/compressed (image_transport's naming); PNG is lossless, so every output must equal the
uncompressed replay's. Annotations are read back with the mcap reader and its ROS 2 decoder (not
rosbags, which wrote them) and checked against the label images and the offline detections.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from hsi_xai_node.classes import DETECTION_CLASSES, SEGMENTATION_CLASSES
from hsi_xai_node.transports import messages as m
from hsi_xai_node.transports.annotations import MIN_REGION_PX
from hsi_xai_node.transports.replay import replay
from test.transports.test_replay import (bag_messages, check_detection_outputs, config, decoded,  # noqa: F401
                                         det_bag, det_replayed, offline_detector, offline_results)

CAMERAS = ("/rgb/image_raw", "/mir/image_raw")  # the tiny detector's stack


def write_typed_bag(path: Path, items) -> Path:
    """A bag of (topic, log time, message type, CDR bytes)."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for topic, t, msgtype, data in sorted(items, key=lambda x: x[1]):
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=m.typestore())
            w.write(conns[topic], t, data)
    return path


def compressed(header, fmt: str, data: bytes) -> bytes:
    return m.serialize(m.typestore().types[m.COMPRESSED](header=header, format=fmt,
                                                         data=np.frombuffer(data, np.uint8).copy()))


def encode(image: np.ndarray, codec: str) -> bytes:
    ok, buf = cv2.imencode(".png" if codec == "png" else ".jpg", image,
                           [cv2.IMWRITE_JPEG_QUALITY, 95] if codec == "jpeg" else [])
    assert ok
    return buf.tobytes()


def png_declaring(width: int, height: int, depth: int, colour: int) -> bytes:
    """A real 1x1 PNG whose header is rewritten to declare another size and sample format (its CRC then no longer
    matches: a decoder would fail, or allocate the declared size first)."""
    data = bytearray(encode(np.zeros((1, 1), np.uint8), "png"))
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[24], data[25] = depth, colour
    return bytes(data)


def compress_bag(src: Path, dst: Path, codec: dict[str, str], raw_png: bool = False, extra=()) -> Path:
    """`src` with the topics in `codec` (topic -> "png" or "jpeg") re-recorded as CompressedImage on
    <topic>/compressed, the raw mosaic too when `raw_png`; every other message as it was."""
    items = list(extra)
    for (topic, t), data in bag_messages(src).items():
        if topic in codec or (raw_png and topic == "/hsi/image_raw"):
            msg = m.deserialize(data, "sensor_msgs/msg/Image")
            kind = codec.get(topic, "png")
            items.append((topic + "/compressed", t, m.COMPRESSED,
                          compressed(msg.header, f"{msg.encoding}; {kind} compressed {msg.encoding}",
                                     encode(m.image_to_array(msg), kind))))
        else:
            items.append((topic, t, "sensor_msgs/msg/Image", data))
    return write_typed_bag(dst, items)


@pytest.fixture(scope="module")
def png_replayed(tmp_path_factory, config, det_bag):  # noqa: F811
    """The detection drive bag with both cameras and the mosaic recorded as PNG, replayed."""
    bag = compress_bag(det_bag, tmp_path_factory.mktemp("png") / "in", {t: "png" for t in CAMERAS}, raw_png=True)
    out = tmp_path_factory.mktemp("png_out") / "out"
    return replay(bag, out, config, progress=False), out, bag


def test_png_cameras_and_mosaic_give_the_uncompressed_outputs(config, det_bag, det_replayed, png_replayed,  # noqa: F811
                                                              offline_detector):  # noqa: F811
    summary, out, bag = png_replayed
    assert (summary.frames_in, summary.frames_processed, summary.bad_total) == (3, 3, 0)
    assert (summary.camera_sets_in, summary.camera_sets_processed, summary.detection) == (3, 3, "on")
    check_detection_outputs(config, out, offline_results(det_bag, offline_detector))
    # the segmentation outputs equal those of the replay of the uncompressed bag, message for message
    names = [config.output_topic(n) for n in ("labels", "segmentation", "gradcam_overlay", "activation_overlay")]
    ref = {(topic, t): data for topic, _, t, data, _ in decoded(det_replayed[1], names)}
    got = {(topic, t): data for topic, _, t, data, _ in decoded(out, names)}
    assert len(ref) == 12 and got == ref
    # the compressed inputs are copied into the output as they were recorded
    inputs = {(topic, t): data for (topic, t), data in bag_messages(bag).items()}
    assert {(topic, t): data for topic, _, t, data, _ in decoded(out) if (topic, t) in inputs} == inputs
    assert {"/rgb/image_raw/compressed", "/hsi/image_raw/compressed"} <= {topic for topic, _ in inputs}


def test_camera_transport_chooses_which_form_is_read_first(tmp_path, config, det_bag, offline_detector):  # noqa: F811
    """A bag holding both forms: raw reads the Image topics; compressed the /compressed ones (a JPEG RGB here,
    so the detections differ from the lossless ones but every set is still processed)."""
    both = [(topic, t, "sensor_msgs/msg/Image", d) for (topic, t), d in bag_messages(det_bag).items()]
    jpeg = compress_bag(det_bag, tmp_path / "jpeg", {"/rgb/image_raw": "jpeg", "/mir/image_raw": "png"})
    items = both + [(topic, t, m.COMPRESSED, d) for (topic, t), d in bag_messages(jpeg).items()
                    if topic.endswith("/compressed")]
    bag = write_typed_bag(tmp_path / "both", items)
    raw = replay(bag, tmp_path / "raw", config, progress=False)
    assert raw.camera_sets_processed == 3 and raw.bad_total == 0
    check_detection_outputs(config, tmp_path / "raw", offline_results(det_bag, offline_detector))
    comp = replay(bag, tmp_path / "comp", replace(config, camera_transport="compressed"), progress=False)
    assert (comp.camera_messages_in, comp.camera_sets_processed, comp.bad_total) == (6, 3, 0)
    read = {topic for topic, _, _, _, _ in decoded(tmp_path / "comp", [config.output_topic("detection/overlay")])}
    assert read == {config.output_topic("detection/overlay")}
    # JPEG at quality 95 moves pixels by a few grey levels: the detector sees a slightly different image
    lossless = offline_results(det_bag, offline_detector)
    overlays = {t: msg for _, _, t, _, msg in decoded(tmp_path / "comp", [config.output_topic("detection/overlay")])}
    for t, (_, result) in lossless.items():
        got = np.frombuffer(overlays[t].data, np.uint8).reshape(result.detection_overlay.shape)
        assert 0 < np.abs(got.astype(int) - result.detection_overlay).mean() < 20


def test_bad_compressed_messages_are_skipped_and_counted(tmp_path, config, det_bag, offline_detector):  # noqa: F811
    good = compress_bag(det_bag, tmp_path / "good", {t: "png" for t in CAMERAS}, raw_png=True)
    msgs = bag_messages(good)
    t_rgb = sorted(t for topic, t in msgs if topic == "/rgb/image_raw/compressed")
    t_raw = sorted(t for topic, t in msgs if topic == "/hsi/image_raw/compressed")
    mosaic = np.zeros((1088, 2048), np.uint16)
    bad = [
        ("/rgb/image_raw/compressed", t_rgb[0] + 1, m.COMPRESSED, compressed(m.header(t_rgb[0] + 1, "rgb_camera"), "png",
                                                                              b"\x89PNG\r\n\x1a\n garbage")),
        # headers that lie: a few hundred bytes declaring 40000 x 40000 (1.6 GB decoded), an RGBA16 32767 x 32767
        # (8.6 GB), and a complete PNG of the wrong size: refused from the header, nothing decoded
        ("/rgb/image_raw/compressed", t_rgb[0] + 5, m.COMPRESSED,
         compressed(m.header(t_rgb[0] + 5, "rgb_camera"), "png", png_declaring(40000, 40000, 8, 2))),
        ("/hsi/image_raw/compressed", t_raw[0] + 6, m.COMPRESSED,
         compressed(m.header(t_raw[0] + 6, "hsi_camera"), "png", png_declaring(32767, 32767, 16, 6))),
        ("/hsi/image_raw/compressed", t_raw[0] + 7, m.COMPRESSED,
         compressed(m.header(t_raw[0] + 7, "hsi_camera"), "png", encode(np.zeros((1000, 1000), np.uint16), "png"))),
        ("/rgb/image_raw/compressed", t_rgb[0] + 2, m.COMPRESSED, compressed(m.header(t_rgb[0] + 2, "rgb_camera"), "tiff",
                                                                              b"II*\x00")),
        ("/rgb/image_raw/compressed", t_rgb[0] + 3, m.COMPRESSED,  # a 16-bit image where the rig wants bgr8
         compressed(m.header(t_rgb[0] + 3, "rgb_camera"), "png", encode(np.zeros((480, 640), np.uint16), "png"))),
        ("/hsi/image_raw/compressed", t_raw[0] + 4, m.COMPRESSED,  # JPEG would mix the mosaic's bands
         compressed(m.header(t_raw[0] + 4, "hsi_camera"), "jpeg", encode(mosaic.astype(np.uint8), "jpeg"))),
    ]
    items = [(topic, t, m.COMPRESSED if topic.endswith("/compressed") else "sensor_msgs/msg/Image", d)
             for (topic, t), d in msgs.items()] + bad
    s = replay(write_typed_bag(tmp_path / "bad", items), tmp_path / "out", config, progress=False)
    assert {k: v["count"] for k, v in s.bad.items()} == {
        "undecodable compressed image on /rgb/image_raw/compressed": 1,
        "unsupported compression on /rgb/image_raw/compressed": 1,
        "wrong encoding on /rgb/image_raw/compressed": 1, "unsupported compression": 1,
        "wrong frame size on /rgb/image_raw/compressed": 1, "wrong frame size": 2}
    assert "png header declares 40000x40000, the image must be 640x480 (not decoded)" in \
        s.bad["wrong frame size on /rgb/image_raw/compressed"]["first"]
    assert "png header declares 32767x32767, the image must be 2048x1088 (not decoded)" in s.bad["wrong frame size"]["first"]
    assert "'tiff' is neither jpeg nor png" in s.bad["unsupported compression on /rgb/image_raw/compressed"]["first"]
    assert "jpeg is lossy, this input takes png only" in s.bad["unsupported compression"]["first"]
    assert "uint16 x 1 channel(s), expected ['bgr8']" in s.bad["wrong encoding on /rgb/image_raw/compressed"]["first"]
    # the good messages all went through
    assert (s.frames_processed, s.camera_sets_processed) == (3, 3)
    check_detection_outputs(config, tmp_path / "out", offline_results(det_bag, offline_detector))


# --- Foxglove annotations --------------------------------------------------------------------------------
def rgba(bgr) -> tuple:
    return (bgr[2] / 255, bgr[1] / 255, bgr[0] / 255, 1.0)


def test_segmentation_outlines_trace_the_label_images(config, det_replayed):  # noqa: F811
    _, out = det_replayed
    labels = {t: msg for _, _, t, _, msg in decoded(out, [config.output_topic("labels")])}
    notes = decoded(out, [config.output_topic("segmentation_annotations")])
    assert sorted(t for _, _, t, _, _ in notes) == sorted(labels)
    colours = {rgba(c.bgr): c.id for c in SEGMENTATION_CLASSES}
    for _, schema, t, _, msg in notes:
        assert schema == "foxglove_msgs/msg/ImageAnnotations" and not msg.circles and not msg.texts
        image = labels[t]
        ids = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width)
        filled = {}
        for p in msg.points:
            assert p.type == 2 and (p.timestamp.sec, p.timestamp.nanosec) == (image.header.stamp.sec,
                                                                                image.header.stamp.nanosec)
            cls = colours[(p.outline_color.r, p.outline_color.g, p.outline_color.b, p.outline_color.a)]
            poly = np.array([[q.x - 0.5, q.y - 0.5] for q in p.points]).round().astype(np.int32)
            canvas = filled.setdefault(cls, np.zeros_like(ids))
            cv2.fillPoly(canvas, [poly], 1)
        big = [c.id for c in SEGMENTATION_CLASSES if c.id and (ids == c.id).sum() > 2000]
        assert big, "the drive's frames hold large class regions"
        for cls in big:  # the filled outlines cover the class's region (holes and tiny islands aside)
            region = ids == cls
            inter = (filled.get(cls, np.zeros_like(ids)).astype(bool) & region).sum()
            assert inter / region.sum() > 0.9, (t, cls)
        assert set(filled) <= {c.id for c in SEGMENTATION_CLASSES if (ids == c.id).sum() >= MIN_REGION_PX}


def test_detection_annotations_carry_the_boxes_and_labels(config, det_bag, det_replayed, offline_detector):  # noqa: F811
    _, out = det_replayed
    expected = offline_results(det_bag, offline_detector)
    notes = {t: (schema, msg) for _, schema, t, _, msg in decoded(out, [config.output_topic("detection_annotations")])}
    assert sorted(notes) == sorted(expected)
    colours = {c.name: rgba(c.bgr) for c in DETECTION_CLASSES}
    for t, (hdr, result) in expected.items():
        schema, msg = notes[t]
        assert schema == "foxglove_msgs/msg/ImageAnnotations"
        assert len(msg.points) == len(msg.texts) == len(result.detections) > 0
        for p, text, d in zip(msg.points, msg.texts, result.detections):
            x0, y0, x1, y1 = (float(v) for v in d.camera_box)
            assert [(q.x, q.y) for q in p.points] == [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            assert (p.outline_color.r, p.outline_color.g, p.outline_color.b, p.outline_color.a) == colours[d.class_name]
            assert text.text == f"{d.class_name} {d.score:.2f}" and text.position.x == x0
            assert (p.timestamp.sec, p.timestamp.nanosec) == (hdr.stamp.sec, hdr.stamp.nanosec)

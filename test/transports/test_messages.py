"""sensor_msgs/Image <-> numpy through real CDR bytes, the errors for malformed images, vision_msgs."""

import numpy as np
import pytest

from hsi_xai_node.errors import FrameError
from hsi_xai_node.transports import messages as m

T = m.typestore().types


def cdr_round_trip(msg, msgtype="sensor_msgs/msg/Image"):
    return m.deserialize(m.serialize(msg), msgtype)


def raw_image(encoding="mono16", height=4, width=6, step=None, data=None, bigendian=0):
    step = width * 2 if step is None else step
    data = np.zeros(step * height, np.uint8) if data is None else data
    return T["sensor_msgs/msg/Image"](header=m.header(0, "cam"), height=height, width=width, encoding=encoding,
                                      is_bigendian=bigendian, step=step, data=data)


@pytest.mark.parametrize("encoding", sorted(m.ENCODINGS))
def test_image_round_trip_every_encoding(encoding):
    dtype, channels = m.ENCODINGS[encoding]
    rng = np.random.default_rng(0)
    shape = (5, 7) if channels == 1 else (5, 7, channels)
    if np.dtype(dtype).kind == "f":
        array = rng.normal(size=shape).astype(dtype)
    else:
        array = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)
    stamp = 1_700_000_000_123_456_789
    back = cdr_round_trip(m.array_to_image(array, encoding, m.header(stamp, "hsi_camera")))
    assert back.encoding == encoding and (back.height, back.width) == (5, 7)
    assert m.stamp_ns(back.header) == stamp and back.header.frame_id == "hsi_camera"
    out = m.image_to_array(back, "img")
    assert out.dtype == dtype and np.array_equal(out, array)


def test_padded_step_drops_the_padding():
    array = np.arange(4 * 6, dtype=np.uint16).reshape(4, 6)
    padded = np.zeros((4, 16), np.uint8)  # 12 bytes of pixels and 4 of padding per row
    padded[:, :12] = array.view(np.uint8)
    msg = cdr_round_trip(raw_image(step=16, data=padded.reshape(-1)))
    assert np.array_equal(m.image_to_array(msg, "raw", ("mono16",)), array)


@pytest.mark.parametrize("msg, match", [
    (raw_image(encoding="bgr8", step=18), r"encoding 'bgr8' is not supported here \(expected one of \['mono16'\]\)"),
    (raw_image(encoding="yuv422"), "encoding 'yuv422'"),
    (raw_image(data=np.zeros(40, np.uint8)), "40 data bytes for 4 rows of step 12.*truncated"),
    (raw_image(step=10, data=np.zeros(40, np.uint8)), "step 10 is smaller than a 6-pixel mono16 row"),
    (raw_image(bigendian=1), "big-endian"),
])
def test_malformed_images_raise_frame_error(msg, match):
    with pytest.raises(FrameError, match=match):
        m.image_to_array(cdr_round_trip(msg), "raw", ("mono16",))


def test_array_to_image_rejects_wrong_channel_count():
    with pytest.raises(FrameError, match="cannot be a bgr8 image"):
        m.array_to_image(np.zeros((4, 4), np.uint8), "bgr8", m.header(0, "cam"))


def test_detection2darray_round_trip():
    hyp = T["vision_msgs/msg/ObjectHypothesisWithPose"](
        hypothesis=T["vision_msgs/msg/ObjectHypothesis"](class_id="car", score=0.875),
        pose=T["geometry_msgs/msg/PoseWithCovariance"](
            pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=1.0, y=2.0, z=0.0),
                                             orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)),
            covariance=np.arange(36, dtype=np.float64)))
    bbox = T["vision_msgs/msg/BoundingBox2D"](
        center=T["vision_msgs/msg/Pose2D"](position=T["vision_msgs/msg/Point2D"](x=120.5, y=64.25), theta=0.0),
        size_x=40.0, size_y=22.0)
    hdr = m.header(1_700_000_000_040_000_000, "hsi_camera")
    det = T["vision_msgs/msg/Detection2D"](header=hdr, results=[hyp], bbox=bbox, id="7")
    msg = T["vision_msgs/msg/Detection2DArray"](header=hdr, detections=[det, det])
    back = cdr_round_trip(msg, "vision_msgs/msg/Detection2DArray")
    assert m.stamp_ns(back.header) == 1_700_000_000_040_000_000 and len(back.detections) == 2
    d = back.detections[1]
    assert d.id == "7" and d.results[0].hypothesis.class_id == "car" and d.results[0].hypothesis.score == 0.875
    assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x) == (120.5, 64.25, 40.0)
    assert np.array_equal(d.results[0].pose.covariance, np.arange(36))


def test_transport_topic_follows_image_transport_naming():
    both = {"/rgb/image_raw", "/rgb/image_raw/compressed"}
    assert m.transport_topic(both, "/rgb/image_raw", "raw") == "/rgb/image_raw"
    assert m.transport_topic(both, "/rgb/image_raw", "compressed") == "/rgb/image_raw/compressed"
    assert m.transport_topic({"/rgb/image_raw/compressed"}, "/rgb/image_raw", "raw") == "/rgb/image_raw/compressed"
    assert m.transport_topic({"/rgb/image_raw"}, "/rgb/image_raw", "compressed") == "/rgb/image_raw"
    assert m.transport_topic({"/nir/image_raw"}, "/rgb/image_raw", "raw") is None


@pytest.mark.parametrize("fmt, codec", [("png", "png"), ("jpeg", "jpeg"), ("bgr8; jpeg compressed bgr8", "jpeg"),
                                        ("mono16; png compressed mono16", "png"), ("JPG", "jpeg"), ("tiff", None)])
def test_compressed_codec(fmt, codec):
    assert m.compressed_codec(fmt) == codec


def compressed(fmt, image, ext=".png"):
    import cv2

    ok, buf = cv2.imencode(ext, image)
    assert ok
    return m.typestore().types[m.COMPRESSED](header=m.header(1, "cam"), format=fmt, data=buf.reshape(-1))


def test_16_bit_png_decodes_to_the_exact_pixels():
    image = np.random.default_rng(0).integers(0, 65535, (6, 7), dtype=np.uint16)
    np.testing.assert_array_equal(m.compressed_to_array(compressed("png", image), "fir", ("mono16",)), image)
    colour = np.random.default_rng(1).integers(0, 255, (6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(m.compressed_to_array(compressed("png", colour), "rgb", ("bgr8",)), colour)
    # an rgb8 consumer gets RGB order, though OpenCV decodes BGR
    np.testing.assert_array_equal(m.compressed_to_array(compressed("png", colour), "rgb", ("rgb8",)), colour[..., ::-1])


def test_bad_compressed_images_name_the_reason():
    colour = np.zeros((6, 7, 3), np.uint8)
    for msg, encodings, lossless, reason in [
            (compressed("jpeg", colour, ".jpg"), ("mono16", "16UC1"), True, "unsupported compression"),
            (compressed("png", colour), ("mono16", "16UC1"), False, "wrong encoding"),
            (m.typestore().types[m.COMPRESSED](header=m.header(1, "c"), format="png",
                                               data=np.frombuffer(b"\x89PNG junk", np.uint8)), ("bgr8",), False,
             "undecodable compressed image")]:
        with pytest.raises(FrameError) as exc:
            m.compressed_to_array(msg, "cam", encodings, lossless=lossless)
        assert exc.value.reason == reason and str(exc.value).startswith("cam: ")


def test_image_headers_say_what_opencv_will_decode():
    """The size and sample type read from a PNG or JPEG header (no decoding) are those cv2.imdecode then gives."""
    import cv2

    from hsi_xai_node.transports.messages import image_header

    rng = np.random.default_rng(0)
    images = {"gray8": rng.integers(0, 255, (37, 53), np.uint8), "gray16": rng.integers(0, 65535, (21, 17), np.uint16),
              "bgr8": rng.integers(0, 255, (9, 31, 3), np.uint8), "bgra8": rng.integers(0, 255, (12, 7, 4), np.uint8),
              "bgr16": rng.integers(0, 65535, (5, 6, 3), np.uint16)}
    for name, image in images.items():
        for ext in (".png", ".jpg"):
            if ext == ".jpg" and (image.dtype != np.uint8 or image.ndim == 3 and image.shape[2] == 4):
                continue
            ok, buf = cv2.imencode(ext, image)
            assert ok
            data = buf.tobytes()
            header = image_header(data, "png" if ext == ".png" else "jpeg")
            decoded = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            assert (header.width, header.height) == (decoded.shape[1], decoded.shape[0]), (name, ext)
            assert header.dtype == decoded.dtype.type, (name, ext)
            assert header.channels == (1 if decoded.ndim == 2 else decoded.shape[2]), (name, ext)
            assert image_header(data[:len(data) // 20], header.codec) in (None, header)  # a cut file: no nonsense
    for junk in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a" + bytes(40), bytes(100)):
        assert image_header(junk, "png") is None and image_header(junk, "jpeg") is None

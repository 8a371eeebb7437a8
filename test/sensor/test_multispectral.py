"""Multispectral front end: registration geometry, alignment on generated frames,
normalisation, bad frames and configs named."""

import cv2
import numpy as np
import pytest

from hsi_xai_node.classes import CAR
from hsi_xai_node.errors import FrameError, InputError
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.scenes.render import default_cameras
from hsi_xai_node.sensor.multispectral import (STACKS, CameraInput, MultispectralFrontEnd, StackConfig,
                                               boxes_to_common, boxes_to_network, network_from_common,
                                               stack_config, stack_config_from_dict)

SX, SY = 320 / 640, 256 / 480  # common view -> network view
CAMERAS = ("rgb", "fir", "mir", "nir")


def all_cameras() -> StackConfig:
    return StackConfig(tuple(stack_config(n).cameras[0] for n in CAMERAS))


def identity_camera(encoding, offset=0.0, scale=255.0, name="cam"):
    """A camera that sees exactly the network view: registration is the identity."""
    return CameraInput(name, encoding, 320, 256, network_from_common((640, 480), (320, 256)), offset, scale)


@pytest.fixture(scope="module")
def drive_frame(hsi_drive):
    return DriveGenerator(hsi_drive, seed=0).frame(0)


# --- geometry -------------------------------------------------------------------------------

def test_network_from_common_maps_pixel_centres_and_edges():
    h = network_from_common((640, 480), (320, 256))
    pts = np.array([[[-0.5, -0.5], [639.5, 479.5], [0.0, 0.0], [319.5, 239.5]]])
    out = cv2.perspectiveTransform(pts, h)[0]
    np.testing.assert_allclose(out, [[-0.5, -0.5], [319.5, 255.5], [-0.25, -0.5 + 0.5 * SY], [159.5, 127.5]])
    cfg = all_cameras()
    np.testing.assert_allclose(boxes_to_network([[100, 60, 200, 120], [0, 0, 640, 480]], cfg),
                               [[50, 32, 100, 64], [0, 0, 320, 256]])
    boxes = np.random.default_rng(0).uniform(0, 480, (7, 4))
    np.testing.assert_allclose(boxes_to_common(boxes_to_network(boxes, cfg), cfg), boxes)
    assert boxes_to_network(np.zeros((0, 4)), cfg).shape == (0, 4)


RECTS = ((100, 80, 180, 160), (400, 200, 520, 260), (300, 360, 340, 440))  # common view, pixel edges


@pytest.mark.parametrize("spec", default_cameras(), ids=lambda s: s.name)
def test_registration_puts_common_view_rectangles_where_expected(spec):
    """Render bright rectangles into the camera as the renderer does, register them back."""
    common = np.zeros((480, 640), np.float32)
    for x0, y0, x1, y1 in RECTS:
        common[y0:y1, x0:x1] = 1.0
    cam = cv2.warpPerspective(common, spec.homography, (spec.width, spec.height))
    lo, hi = (29000, 31000) if spec.encoding == "mono16" else (20, 220)
    img = np.rint(lo + (hi - lo) * cam).astype(np.uint16 if spec.encoding == "mono16" else np.uint8)
    if spec.encoding == "bgr8":
        img = np.dstack([img] * 3)
    reg = MultispectralFrontEnd(all_cameras()).register(spec.name, img)
    assert reg.shape == ((256, 320, 3) if spec.encoding == "bgr8" else (256, 320)) and reg.dtype == np.float32
    share = ((reg[..., 0] if reg.ndim == 3 else reg) - lo) / (hi - lo)
    # rgb and fir resolve the common view; mir and nir see it at ~half resolution (coarser edges)
    tol = 0.05 if spec.width == 640 else 0.25
    for x0, y0, x1, y1 in RECTS:
        ex, ey = (x0 + x1) / 2 * SX - 0.5, (y0 + y1) / 2 * SY - 0.5  # centre, pixel-centre coordinates
        c0, r0, c1, r1 = int(x0 * SX) - 6, int(y0 * SY) - 6, int(np.ceil(x1 * SX)) + 6, int(np.ceil(y1 * SY)) + 6
        win = share[r0:r1, c0:c1]
        rows, cols = np.mgrid[r0:r1, c0:c1]
        assert abs((win * cols).sum() / win.sum() - ex) < tol
        assert abs((win * rows).sum() / win.sum() - ey) < tol
        assert win.sum() == pytest.approx((x1 - x0) * SX * (y1 - y0) * SY, rel=0.02)  # area preserved
        np.testing.assert_allclose(reg[round(ey), round(ex)], hi, atol=1e-3)  # interior: the camera value
        np.testing.assert_allclose(reg[r0, c0], lo, atol=1e-3)  # just outside: the background


def test_large_camera_is_area_averaged_not_aliased():
    """1-pixel stripes and checkers in the 640x480 RGB camera register as their mean;
    bilinear sampling at 2x alone gives values anywhere in 0..200 (std ~64 for stripes)."""
    front = MultispectralFrontEnd(stack_config("rgb"))
    rows, cols = np.mgrid[:480, :640]
    for pattern in (cols % 2, (rows + cols) % 2):
        reg = front.register("rgb", np.dstack([pattern * 200] * 3).astype(np.uint8))[10:-10, 10:-10]
        np.testing.assert_allclose(reg, 100.0, atol=0.01)


def _edges(plane):
    g = cv2.magnitude(cv2.Sobel(plane, cv2.CV_32F, 1, 0), cv2.Sobel(plane, cv2.CV_32F, 0, 1))
    return (g - g.mean()) / g.std()


def _shift(ref, moving, r=2, m=8):
    """Sub-pixel (dx, dy) that best aligns edge map `moving` onto `ref` (correlation peak)."""
    a = ref[m:-m, m:-m]
    corr = np.array([[(a * moving[m + dy:moving.shape[0] - m + dy, m + dx:moving.shape[1] - m + dx]).mean()
                      for dx in range(-r, r + 1)] for dy in range(-r, r + 1)])
    iy, ix = np.unravel_index(corr.argmax(), corr.shape)
    assert 0 < iy < 2 * r and 0 < ix < 2 * r, "no correlation peak inside the search window"

    def vertex(v0, v1, v2):
        return 0.5 * (v0 - v2) / (v0 - 2 * v1 + v2)
    return (ix - r + vertex(*corr[iy, ix - 1:ix + 2]), iy - r + vertex(*corr[iy - 1:iy + 2, ix]))


def test_generated_frame_cameras_line_up_with_each_other_and_the_boxes(drive_frame):
    cfg = all_cameras()
    x = MultispectralFrontEnd(cfg)({n: c.image for n, c in drive_frame.cameras.items()})[0]
    assert x.shape == (6, 256, 320) and x.dtype == np.float32
    # the normalisation constants put each camera's 1st-99th percentiles inside [-2, 2]
    lo, hi = np.percentile(x.reshape(6, -1), [1, 99], axis=1)
    assert np.all(lo > -2) and np.all(hi < 2), (lo, hi)
    # edges of every camera coincide with the RGB camera's to a fraction of a network pixel
    ref = _edges(x[:3].mean(0))
    for c, name in ((3, "fir"), (4, "mir"), (5, "nir")):
        dx, dy = _shift(ref, _edges(x[c]))
        assert abs(dx) < 0.2 and abs(dy) < 0.2, (name, dx, dy)
    dx, dy = _shift(ref, _edges(np.roll(x[5], 1, axis=1)))  # the measure sees a 1 px error
    assert abs(dx - 1) < 0.2 and abs(dy) < 0.2
    # the largest car's box (common view -> network view) stands out from the road around it in every camera
    car = max((o for o in drive_frame.camera_objects if o.class_id == CAR),
              key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
    x0, y0, x1, y1 = boxes_to_network([car.box], cfg)[0]
    assert x1 - x0 > 20 and y1 - y0 > 15
    c0, r0, c1, r1 = int(np.ceil(x0)) + 1, int(np.ceil(y0)) + 1, int(x1) - 1, int(y1) - 1
    planes = {"rgb": x[:3].mean(0), "fir": x[3], "mir": x[4], "nir": x[5]}
    for name, p in planes.items():
        ring = np.concatenate([p[r0 - 6:r0 - 2, c0:c1].ravel(), p[r1 + 2:r1 + 6, c0:c1].ravel(),
                               p[r0:r1, c0 - 6:c0 - 2].ravel(), p[r0:r1, c1 + 2:c1 + 6].ravel()])
        assert abs(p[r0:r1, c0:c1].mean() - np.median(ring)) > 0.3, name


def test_preview_is_the_colour_camera_or_a_stretched_gray(drive_frame):
    images = {n: c.image for n, c in drive_frame.cameras.items()}
    front = MultispectralFrontEnd(stack_config("rgb+mir"))
    view = front.preview(images)
    assert view.shape == (256, 320, 3) and view.dtype == np.uint8
    reg = front.register("rgb", images["rgb"])
    np.testing.assert_array_equal(view[..., ::-1], np.clip(np.rint(reg), 0, 255).astype(np.uint8))
    gray = MultispectralFrontEnd(stack_config("mir")).preview(images)
    assert gray.shape == (256, 320, 3) and gray.dtype == np.uint8
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    lo, hi = np.percentile(gray[20:-20, 20:-20, 0], [0.5, 99.5])
    assert lo == 0 and hi == 255  # stretched over the full range


# --- normalisation --------------------------------------------------------------------------

@pytest.mark.parametrize("encoding,value,offset,scale", [
    ("mono16", 30315, 28315.0, 2500.0), ("mono16", 23500, 28315.0, 2500.0), ("mono8", 77, 114.495, 57.63),
    ("mono8", 255, 0.0, 255.0)])
def test_constant_image_normalises_to_hand_value(encoding, value, offset, scale):
    cfg = StackConfig((identity_camera(encoding, offset, scale),))
    img = np.full((256, 320), value, np.uint16 if encoding == "mono16" else np.uint8)
    out = MultispectralFrontEnd(cfg)({"cam": img})
    assert out.shape == (1, 1, 256, 320) and out.dtype == np.float32
    np.testing.assert_array_equal(out, (np.float32(value) - np.float32(offset)) / np.float32(scale))


def test_colour_channels_come_out_r_g_b():
    bgr = np.empty((256, 320, 3), np.uint8)
    bgr[...] = (10, 100, 200)  # B, G, R
    cfg = StackConfig((identity_camera("bgr8", name="a"), identity_camera("rgb8", (1, 2, 3), (2, 4, 8), "b")))
    assert cfg.channel_names == ("a.r", "a.g", "a.b", "b.r", "b.g", "b.b")
    out = MultispectralFrontEnd(cfg)({"a": bgr, "b": bgr})[0]
    expect = np.array([200, 100, 10, (10 - 1) / 2, (100 - 2) / 4, (200 - 3) / 8]) / [255, 255, 255, 1, 1, 1]
    np.testing.assert_allclose(out[:, 100, 100], expect, rtol=1e-6)
    assert np.all(out == out[:, :1, :1])


def test_preset_rgb_uses_imagenet_statistics_and_zero_outside_the_view():
    out = MultispectralFrontEnd(stack_config("rgb"))({"rgb": np.full((480, 640, 3), 150, np.uint8)})[0]
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    np.testing.assert_allclose(out[:, 128, 160], (150 - mean) / std, rtol=1e-5)
    # the rgb camera is shifted 4 px right of the common view: the network view's last column is outside it
    np.testing.assert_array_equal(out[:, 128, 319], 0.0)


# --- bad frames and configs -----------------------------------------------------------------

def _good_images():
    return {"rgb": np.zeros((480, 640, 3), np.uint8), "fir": np.zeros((480, 640), np.uint16),
            "mir": np.zeros((256, 320), np.uint16), "nir": np.zeros((256, 320), np.uint8)}


@pytest.mark.parametrize("name,image,match", [
    ("mir", None, "'mir': no image"),
    ("nir", np.zeros((256, 320, 3), np.uint8),
     r"'nir': expected mono8 as uint8 \(256, 320\), got uint8 \(256, 320, 3\)"),
    ("mir", np.zeros((256, 320), np.uint8), r"'mir': expected mono16 as uint16 \(256, 320\), got uint8"),
    ("fir", np.zeros((480, 640), np.float32), "'fir': expected mono16 as uint16 .* got float32"),
    ("rgb", np.zeros((480, 640, 3), np.uint16), r"'rgb': expected bgr8 as uint8 \(480, 640, 3\), got uint16"),
    ("rgb", np.zeros((480, 640), np.uint8), r"'rgb': expected bgr8 .* got uint8 \(480, 640\)"),
    ("fir", np.zeros((640, 480), np.uint16), r"'fir': expected mono16 as uint16 \(480, 640\), got uint16 \(640, 480\)"),
    ("nir", np.zeros((128, 160), np.uint8), r"'nir': expected .*\(256, 320\), got uint8 \(128, 160\)"),
])
def test_bad_frames_raise_frame_error_naming_the_camera(name, image, match):
    images = _good_images()
    if image is None:
        del images[name]
    else:
        images[name] = image
    front = MultispectralFrontEnd(all_cameras())
    with pytest.raises(FrameError, match=match):
        front(images)
    if image is not None:
        with pytest.raises(FrameError, match=match):
            front.register(name, image)


def test_frame_checks_accept_good_frames_and_name_unknown_cameras():
    front = MultispectralFrontEnd(all_cameras())
    images = _good_images()
    images["nir"] = images["nir"][..., None]  # (H, W, 1) mono is fine
    images["extra"] = np.zeros(3)  # cameras outside the stack are ignored
    assert front(images).shape == (1, 6, 256, 320)
    with pytest.raises(FrameError, match="'thermal' is not in the stack"):
        front.register("thermal", images["fir"])


H = network_from_common((640, 480), (320, 256))


@pytest.mark.parametrize("kwargs,match", [
    (dict(encoding="yuv422"), "encoding 'yuv422' unknown"),
    (dict(homography=np.eye(3)[:2]), r"homography must be 3x3, got shape \(2, 3\)"),
    (dict(homography=np.zeros((3, 3))), "homography is singular"),
    (dict(homography=[[1, 0, np.nan], [0, 1, 0], [0, 0, 1]]), "homography must be finite"),
    (dict(homography="eye"), "homography must be numbers"),
    (dict(scale=0.0), "scale must be positive"),
    (dict(scale=(1.0, -1.0, 1.0), encoding="rgb8"), "scale must be positive"),
    (dict(offset=(1.0, 2.0)), "offset needs 1 or 1 values"),
    (dict(width=0), "width must be a positive integer"),
    (dict(height=256.0), "height must be a positive integer"),
    (dict(name=""), "camera name must be a non-empty string"),
])
def test_camera_validation(kwargs, match):
    args = dict(name="cam", encoding="mono8", width=320, height=256, homography=H, offset=0.0, scale=255.0)
    with pytest.raises(InputError, match=match):
        CameraInput(**{**args, **kwargs})


def test_stack_validation():
    cam = identity_camera("mono8")
    with pytest.raises(ValueError, match="at least one camera"):
        StackConfig(())
    with pytest.raises(ValueError, match=r"unique, got \['cam', 'cam'\]"):
        StackConfig((cam, cam))
    with pytest.raises(ValueError, match="input_size must be"):
        StackConfig((cam,), input_size=(0, 256))
    with pytest.raises(ValueError, match="common_size must be"):
        StackConfig((cam,), common_size=(640.5, 480))
    cfg = StackConfig([cam], input_size=[320, 256])
    assert cfg.cameras == (cam,) and cfg.input_size == (320, 256) and hash(cfg) == hash(StackConfig((cam,)))


@pytest.mark.parametrize("name,channels,names", [
    ("rgb", 3, ("rgb.r", "rgb.g", "rgb.b")), ("nir", 1, ("nir",)), ("mir", 1, ("mir",)), ("fir", 1, ("fir",)),
    ("rgb+mir", 4, ("rgb.r", "rgb.g", "rgb.b", "mir"))])
def test_presets(name, channels, names):
    cfg = stack_config(name)
    assert cfg.channels == channels and cfg.channel_names == names
    assert cfg.input_size == (320, 256) and cfg.common_size == (640, 480)
    specs = {s.name: s for s in default_cameras()}
    for cam in cfg.cameras:
        np.testing.assert_array_equal(cam.homography, specs[cam.name].homography)
        assert (cam.width, cam.height, cam.encoding) == (specs[cam.name].width, specs[cam.name].height,
                                                        specs[cam.name].encoding)
    assert MultispectralFrontEnd(cfg)(_good_images()).shape == (1, channels, 256, 320)


def test_preset_errors_and_options():
    assert set(STACKS) == {"rgb", "nir", "mir", "fir", "rgb+mir"}
    with pytest.raises(ValueError, match=r"'thermal' unknown; use one of \['rgb', 'nir', 'mir', 'fir', 'rgb\+mir'\]"):
        stack_config("thermal")
    with pytest.raises(ValueError, match="needs a camera named 'mir'"):
        stack_config("rgb+mir", cameras=default_cameras()[:2])
    assert stack_config("fir", input_size=(640, 512)).input_size == (640, 512)
    assert stack_config("mir").cameras[0].offset == (28315.0,)


def _as_dict(cfg):
    return {"cameras": [{"name": c.name, "encoding": c.encoding, "width": c.width, "height": c.height,
                         "homography": [list(r) for r in c.homography], "offset": list(c.offset),
                         "scale": list(c.scale)} for c in cfg.cameras], "input_size": list(cfg.input_size)}


def test_stack_config_from_dict_round_trip():
    for name in STACKS:
        assert stack_config_from_dict(_as_dict(stack_config(name))) == stack_config(name)
    d = _as_dict(stack_config("mir"))
    d["cameras"][0].update(offset=28315, scale=2500)  # scalars are fine
    del d["input_size"]
    assert stack_config_from_dict(d) == stack_config("mir")


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["cameras"][0].pop("scale"), r"cameras\[0\] needs keys .* missing \['scale'\]"),
    (lambda d: d["cameras"][1].update(scael=1), r"cameras\[1\] needs keys .* unknown \['scael'\]"),
    (lambda d: d["cameras"][1].update(homography=[[1, 0], [0, 1]]), r"cameras\[1\]: .*homography must be 3x3"),
    (lambda d: d["cameras"][0].update(width="640"), r"cameras\[0\]: .*width must be a positive integer"),
    (lambda d: d["cameras"][1].update(offset="warm"), r"cameras\[1\]: .*offset must be numbers"),
    (lambda d: d["cameras"][0].update(encoding="bgr"), r"cameras\[0\]: .*encoding 'bgr' unknown"),
    (lambda d: d.update(cameras={"rgb": {}}), "'cameras' must be a list"),
    (lambda d: d.update(inputsize=[320, 256]), r"unknown keys \['inputsize'\]"),
    (lambda d: d.update(input_size=[320]), "input_size must be"),
    (lambda d: d["cameras"].append(d["cameras"][0]), "unique"),
])
def test_stack_config_from_dict_names_the_bad_key(edit, match):
    d = _as_dict(stack_config("rgb+mir"))
    edit(d)
    with pytest.raises(ValueError, match=match):
        stack_config_from_dict(d)


def test_transform_boxes_carries_each_box_as_transform_box_does():
    """All of a frame's boxes in one call: the same bounds as one box at a time, and by hand for a 2x zoom at pixel
    centres (edges double) and for a homography with a perspective term (each corner's (H p) / w, by numpy)."""
    from hsi_xai_node.sensor.rig import transform_box, transform_boxes

    zoom = np.array([[2.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
    assert transform_boxes([(10, 20, 30, 40), (0.5, 1.5, 2.5, 3.5)], zoom) == [(20, 40, 60, 80), (1, 3, 5, 7)]
    h = np.array([[1.1, 0.05, 3.0], [0.02, 0.9, -4.0], [1e-4, 2e-4, 1.0]])
    boxes = np.random.default_rng(0).uniform(0, 200, (9, 4))
    boxes[:, 2:] += boxes[:, :2]
    got = transform_boxes(boxes, h)
    assert got == [transform_box(b, h) for b in boxes]
    for (x0, y0, x1, y1), bounds in zip(boxes, got):
        corners = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]]) - [0.5, 0.5, 0]
        p = corners @ h.T
        xy = p[:, :2] / p[:, 2:] + 0.5
        np.testing.assert_allclose(bounds, [*xy.min(0), *xy.max(0)], rtol=1e-12)
    assert transform_boxes(np.zeros((0, 4)), h) == []

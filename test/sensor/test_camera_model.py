"""The camera_info of the outputs: a point projected through the mosaic camera's camera_info (OpenCV's
projectPoints, distortion included) and through an output's lands in the output pixel the pipeline's own
data path put that camera pixel in (the demosaic's tile indexing, the model window's crop)."""

import cv2
import numpy as np
import pytest

from hsi_xai_node.errors import FrameError
from hsi_xai_node.runtime.pipeline import Pipeline
from hsi_xai_node.sensor.camera_model import CameraModel, from_camera_info, uncalibrated, zoomed
from hsi_xai_node.sensor.demosaic import subsample
from hsi_xai_node.transports import messages as m
from hsi_xai_node.transports.outputs import CameraInfoInput, camera_info_topic, segmentation_grids

K = np.array([[2410.0, 0.0, 1019.3], [0.0, 2395.0, 547.8], [0.0, 0.0, 1.0]])  # HSI-Drive's 2048x1088 sensor
D = (-0.21, 0.08, 0.0012, -0.0007, -0.015)  # plumb_bob


def _info(width=2048, height=1088, k=K, d=D, binning=(0, 0), roi=(0, 0, 0, 0), model="plumb_bob"):
    t = m.typestore().types
    p = np.hstack([np.asarray(k, np.float64), np.zeros((3, 1))])
    return t["sensor_msgs/msg/CameraInfo"](
        header=m.header(0, "hsi_camera"), height=height, width=width, distortion_model=model,
        d=np.asarray(d, np.float64), k=np.asarray(k, np.float64).ravel(), r=np.eye(3).ravel(), p=p.ravel(),
        binning_x=binning[0], binning_y=binning[1],
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=roi[0], y_offset=roi[1], height=roi[3], width=roi[2],
                                                  do_rectify=False))


def _project(points, model: CameraModel) -> np.ndarray:
    return cv2.projectPoints(points, np.zeros(3), np.zeros(3), model.K, np.asarray(model.D))[0][:, 0]


@pytest.fixture(scope="module")
def pipeline():
    return Pipeline()  # the bundled U-Net on HSI-Drive's camera


@pytest.fixture(scope="module")
def points():
    """Points in front of the camera over its whole field of view, many near tile borders."""
    rng = np.random.default_rng(32)
    z = rng.uniform(2.0, 40.0, 400)
    x, y = rng.uniform(-0.38, 0.38, 400) * z, rng.uniform(-0.2, 0.2, 400) * z
    return np.stack([x, y, z], 1)


def test_a_point_lands_in_the_output_pixel_the_demosaic_puts_its_camera_pixel_in(pipeline, points):
    profile = pipeline.profile
    camera = from_camera_info(_info(), 2048, 1088)
    cube_info = camera.through(pipeline.output_pixels())
    window_info = camera.through(pipeline.output_pixels(window=True))
    assert (cube_info.width, cube_info.height) == (409, 216) and cube_info.D == D
    labels = pipeline.process(np.full(profile.frame_shape, 300, np.uint16)).labels
    assert labels.shape == (cube_info.height, cube_info.width)
    crop = pipeline.card.input
    assert (window_info.width, window_info.height) == (crop.width, crop.height)
    raw_uv, cube_uv, window_uv = (_project(points, c) for c in (camera, cube_info, window_info))
    checked = 0
    for (u, v), (cu, cv), (wu, wv) in zip(raw_uv, cube_uv, window_uv):
        col, row = int(np.rint(u)), int(np.rint(v))
        if not (0 <= col < 2048 and 0 <= row < 1088):
            continue
        raw = np.zeros(profile.frame_shape, np.uint16)
        raw[row, col] = 1000  # the camera pixel the point falls in: which cube pixel does the demosaic put it in?
        hit = np.argwhere(subsample(raw, profile).data.max(0) > 0)
        if not len(hit):
            assert not (0 <= np.rint(cu) < 409 and 0 <= np.rint(cv) < 216)  # outside the filter area
            continue
        (r, c), = hit
        assert (int(np.rint(cu)), int(np.rint(cv))) == (c, r)
        assert (int(np.rint(wu)), int(np.rint(wv))) == (c - crop.crop_left, r - crop.crop_top)
        checked += 1
    assert checked > 300


def test_the_output_camera_info_is_the_cameras_rebinned_by_hand(pipeline):
    """Hand-computed: HSI-Drive's filter area starts at column 0, row 3; a tile's centre is its third pixel."""
    assert (pipeline.profile.offset_x, pipeline.profile.offset_y) == (0, 3)
    pixels = pipeline.output_pixels()
    info = from_camera_info(_info(), 2048, 1088).through(pixels)
    np.testing.assert_allclose(info.K, [[2410.0 / 5, 0.0, (1019.3 - 0 - 2) / 5], [0.0, 2395.0 / 5, (547.8 - 3 - 2) / 5],
                                        [0.0, 0.0, 1.0]], rtol=1e-12)
    np.testing.assert_allclose(info.P[:, :3], info.K, rtol=1e-12)
    assert uncalibrated(pixels).binning_x == 5 and uncalibrated(pixels).roi == (0, 3, 2045, 1080)
    assert not uncalibrated(pixels).K.any()


def test_binning_and_roi_of_the_input_are_read_as_image_geometry_does(points):
    """A camera publishing 2x2-binned frames of a 1000x500 region from (24, 80): its image's K is the full
    sensor's with u = (u_full - 24) / 2, and a point lands where the full-resolution projection says."""
    full = from_camera_info(_info(), 2048, 1088)
    binned = from_camera_info(_info(binning=(2, 2), roi=(24, 80, 1000, 500)), 500, 250)
    expect = (_project(points, full) - [24, 80]) / 2
    np.testing.assert_allclose(_project(points, binned), expect, rtol=0, atol=1e-9)


def test_a_zoomed_image_keeps_a_point_in_its_pixels_block(points):
    camera = from_camera_info(_info(width=640, height=480, k=[[520.0, 0, 318.2], [0, 515.0, 241.9], [0, 0, 1]]),
                              640, 480)
    out = camera.through(zoomed(2, 640, 480))
    u = _project(points, camera)
    uz = _project(points, out)
    np.testing.assert_allclose(uz, 2 * (u + 0.5) - 0.5, atol=1e-9)
    assert (out.width, out.height) == (1280, 960)
    inside = (np.rint(u) >= 0).all(1) & (np.rint(u) < [640, 480]).all(1)
    np.testing.assert_array_equal(np.floor((uz[inside] + 0.5) / 2), np.rint(u[inside]))  # pixel -> its 2x2 block


def test_round_trip_through_a_serialised_camera_info(pipeline):
    model = from_camera_info(_info(), 2048, 1088).through(pipeline.output_pixels())
    back = m.deserialize(m.serialize(m.camera_info_message(model, m.header(5, "hsi_camera"))), "sensor_msgs/msg/CameraInfo")
    again = from_camera_info(back, model.width, model.height)
    np.testing.assert_array_equal(again.K, model.K)
    np.testing.assert_array_equal(again.P, model.P)
    assert again.D == model.D and back.header.frame_id == "hsi_camera"


@pytest.mark.parametrize("info, problem", [
    (dict(width=1024), "describes 1024x1088 images"),
    (dict(k=[[np.nan, 0, 1], [0, 1, 1], [0, 0, 1]]), "K has a NaN"),
    (dict(d=(0.1, 0.2)), "takes 5 coefficients, D has 2"),
    (dict(k=[[1.0, 0, 1], [0, 0, 1], [0, 0, 1]]), "K is singular"),
])
def test_a_camera_info_that_cannot_describe_the_frames_is_one_line(info, problem):
    with pytest.raises(FrameError, match=problem) as err:
        from_camera_info(_info(**info), 2048, 1088, "/hsi/camera_info")
    assert "\n" not in str(err.value) and "/hsi/camera_info" in str(err.value)


def test_the_camera_info_input_keeps_the_last_good_message_and_says_where_it_came_from(pipeline):
    state = CameraInfoInput(2048, 1088, "/hsi/camera_info")
    assert "none received" in state.describe()
    assert not state.outputs(segmentation_grids(pipeline, False))["camera_info"].K.any()
    state.update(_info())
    with pytest.raises(FrameError) as err:
        state.update(_info(width=1000))
    assert err.value.reason == "bad camera_info"
    outs = state.outputs(segmentation_grids(pipeline, True))
    assert set(outs) == {"camera_info", "class_maps/camera_info"} and outs["camera_info"].K[0, 0] == 2410.0 / 5
    assert state.describe() == "from /hsi/camera_info"


@pytest.mark.parametrize("image, info", [("hsi/image_raw", "hsi/camera_info"), ("/left/hsi/image_raw",
                                          "/left/hsi/camera_info"), ("image_raw", "camera_info"),
                                         ("/image_raw", "/camera_info")])
def test_camera_info_sits_beside_its_image(image, info):
    assert camera_info_topic(image) == info

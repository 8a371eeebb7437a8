import cv2
import numpy as np
import pytest

from hsi_xai_node.classes import PERSON, ROAD
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.scenes.render import COMMON_VIEW_SIZE, common_from_layout, transform_box
from hsi_xai_node.scenes.spectra import MATERIAL_IDS
from hsi_xai_node.sensor.calibration import load_profile

PROFILE = load_profile("hsi-drive")


@pytest.fixture(scope="module")
def gen():
    return DriveGenerator(PROFILE, seed=0)


@pytest.fixture(scope="module")
def frame(gen):
    return gen.frame(7)


def test_frame_contents(frame):
    p = PROFILE
    assert frame.raw.shape == p.frame_shape and frame.raw.dtype == np.uint16
    assert frame.labels.shape == frame.sun.shape == (p.cube_height, p.cube_width)
    assert frame.labels_full.shape == (p.area_height, p.area_width)
    assert np.array_equal(frame.labels, frame.labels_full[2::5, 2::5][:p.cube_height, :p.cube_width])
    kinds = {n: (c.image.shape, c.image.dtype, c.encoding) for n, c in frame.cameras.items()}
    assert kinds == {"rgb": ((480, 640, 3), np.uint8, "bgr8"), "fir": ((480, 640), np.uint16, "mono16"),
                     "mir": ((256, 320), np.uint16, "mono16"), "nir": ((256, 320), np.uint8, "mono8")}


def test_deterministic(gen, frame):
    again = DriveGenerator(PROFILE, seed=0).frame(7)
    assert np.array_equal(frame.raw, again.raw) and np.array_equal(frame.labels, again.labels)
    for name, cam in frame.cameras.items():
        assert np.array_equal(cam.image, again.cameras[name].image), name
    assert frame.objects == again.objects and frame.stamp_ns == again.stamp_ns
    other = DriveGenerator(PROFILE, seed=1, render_cameras=False).frame(7)
    assert other.cameras == {}
    assert not np.array_equal(frame.raw, other.raw)
    assert gen.frame(8).stamp_ns - frame.stamp_ns == 40_000_000  # 25 fps


def test_illumination_varies_between_frames():
    varied = DriveGenerator(PROFILE, seed=2, render_cameras=False)
    steady = DriveGenerator(PROFILE, seed=2, render_cameras=False, illumination_variation=0.0)
    intensities = {varied.conditions(i).intensity for i in (0, 100, 200)}
    assert len(intensities) == 3 and min(intensities) < 0.97
    assert {steady.conditions(i) for i in (0, 100, 200)} == {steady.conditions(0)}
    a, b = varied.frame(0), varied.frame(100)
    assert a.conditions == varied.conditions(0) and b.conditions == varied.conditions(100)


def _camera_ids(frame, name, table):
    cam = frame.cameras[name]
    m = cam.homography @ common_from_layout(PROFILE.area_height, PROFILE.area_width)
    surface = cv2.warpPerspective(frame.layout.surface, m, cam.image.shape[1::-1], flags=cv2.INTER_NEAREST,
                                  borderMode=cv2.BORDER_REPLICATE)
    return frame.layout.table(table, np.int64)[surface]


def test_fir_people_warmer_than_road(frame):
    fir = frame.cameras["fir"].image.astype(np.float64) / 100.0  # kelvin
    instances = _camera_ids(frame, "fir", "instance")
    people = np.isin(instances, [o.instance for o in frame.objects if o.class_id == PERSON])
    road = _camera_ids(frame, "fir", "class_id") == ROAD
    assert people.sum() > 30
    assert np.median(fir[people]) > np.median(fir[road]) + 2.0
    assert 270 < np.median(fir[road]) < 310


def test_rgb_vegetation_greener_than_asphalt(frame):
    rgb = frame.cameras["rgb"].image.astype(np.float64)
    materials = _camera_ids(frame, "rgb", "material")
    chroma = rgb / rgb.sum(axis=2, keepdims=True).clip(1)
    veg = np.isin(materials, [MATERIAL_IDS["grass"], MATERIAL_IDS["foliage_deciduous"]])
    asphalt = materials == MATERIAL_IDS["asphalt"]
    assert veg.sum() > 1000 and asphalt.sum() > 1000
    assert np.median(chroma[..., 1][veg]) > np.median(chroma[..., 1][asphalt]) + 0.03  # BGR: 1 = green


@pytest.mark.parametrize("name", ["rgb", "fir", "mir", "nir"])
def test_camera_boxes_follow_homographies(frame, name):
    cam = frame.cameras[name]
    instances = _camera_ids(frame, name, "instance")
    w, h = COMMON_VIEW_SIZE
    checked = 0
    for obj in frame.camera_objects:
        x0, y0, x1, y1 = obj.box
        if x0 <= 0 or y0 <= 0 or x1 >= w or y1 >= h:
            continue  # clipped by the common view: the camera may see more of it
        ys, xs = np.nonzero(instances == obj.instance)
        if len(xs) == 0:
            continue
        bx0, by0, bx1, by1 = transform_box(obj.box, cam.homography)
        assert bx0 - 1.5 <= xs.min() and xs.max() + 1 <= bx1 + 1.5
        assert by0 - 1.5 <= ys.min() and ys.max() + 1 <= by1 + 1.5
        checked += 1
    assert checked >= 2


def test_common_view_boxes_scale_layout_boxes(frame):
    s = COMMON_VIEW_SIZE[1] / PROFILE.area_height
    crop = (PROFILE.area_width - PROFILE.area_height * 4 / 3) / 2
    by_instance = {o.instance: o for o in frame.objects}
    for obj in frame.camera_objects:
        x0, y0, x1, y1 = by_instance[obj.instance].box
        expected = (max((x0 - crop) * s, 0), y0 * s, min((x1 - crop) * s, 640), y1 * s)
        np.testing.assert_allclose(obj.box, expected, atol=1e-6)

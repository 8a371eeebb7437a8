import numpy as np
import pytest

from hsi_xai_node.classes import ROAD
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.scenes.render import WHITE_PANEL_REFLECTANCE, HsiRenderer
from hsi_xai_node.scenes.spectra import MATERIAL_IDS, daylight, reflectance
from hsi_xai_node.sensor.calibration import load_profile
from hsi_xai_node.sensor.demosaic import subsample

from .helpers import flat_maps, reflectance_cube

LIGHT = daylight(45.0)


@pytest.fixture(scope="module", params=["hsi-drive", "imec-665-975"])
def renderer(request):
    return HsiRenderer(load_profile(request.param), LIGHT)


@pytest.fixture(scope="module")
def references(renderer):
    return renderer.references(LIGHT, np.random.default_rng(1))


def test_reference_frames(renderer, references):
    p = renderer.profile
    dark, white = references
    assert dark.shape == white.shape == p.frame_shape and dark.dtype == white.dtype == np.uint16
    d, w = subsample(dark, p).data, subsample(white, p).data
    assert 25 <= d.mean() <= 40 and d.std() < 1.5                      # black level, little noise
    full = 2**p.bit_depth - 1
    assert 0.70 * full <= w.mean(axis=(1, 2)).max() <= 0.80 * full     # brightest band at ~75%
    assert (w > d).all()
    # a second white panel shot calibrates to reflectance ~1
    _, white2 = renderer.references(LIGHT, np.random.default_rng(2))
    refl = reflectance_cube(white2, dark, white, p)
    assert refl.mean() == pytest.approx(1.0, abs=0.005) and refl.std() < 0.02


@pytest.mark.parametrize("material", ["asphalt", "grass", "paint_white", "cone_orange", "car_paint_blue"])
def test_calibrated_reflectance_matches_band_averaged_spectrum(renderer, references, material):
    p = renderer.profile
    raw = renderer.raw(flat_maps(p, material), LIGHT, np.random.default_rng(3))
    measured = reflectance_cube(raw, *references, p).mean(axis=(1, 2)) * WHITE_PANEL_REFLECTANCE
    expected = renderer.band_reflectance(reflectance(material), LIGHT)
    np.testing.assert_allclose(measured, expected, rtol=0.03, atol=0.002)


def test_shot_noise_grows_with_signal(renderer):
    """Variance over repeated frames of flat patches = signal / gain + read noise^2 (+ quantisation)."""
    p = renderer.profile
    levels = np.repeat(np.array([0.15, 0.4, 0.7, 1.0], np.float32), -(-p.area_width // 4))[:p.area_width]
    maps = flat_maps(p, "concrete", texture=levels[None, :])
    frames = np.stack([subsample(renderer.raw(maps, LIGHT, np.random.default_rng(100 + i)), p).data
                       for i in range(12)])
    var = frames.var(axis=0, ddof=1)                          # per pixel, over repeats
    signal = subsample(renderer.raw(maps, LIGHT, np.random.default_rng(0)), p).data.mean(0) - 32.0
    expected = signal / renderer.e_per_dn + (renderer.noise.read_noise_e / renderer.e_per_dn) ** 2 + 1 / 12
    edges = np.linspace(0, var.shape[2], 5).astype(int)
    measured_by_level, expected_by_level = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        block = slice(a + 2, b - 2)
        measured_by_level.append(var[:, :, block].mean())
        expected_by_level.append(expected[:, block].mean())
    np.testing.assert_allclose(measured_by_level, expected_by_level, rtol=0.2)
    assert measured_by_level[-1] > 2 * measured_by_level[0]


def test_raw_frame_properties(renderer):
    p = renderer.profile
    gen_raw = renderer.raw(flat_maps(p, "paint_white"), daylight(70.0, 1.3), np.random.default_rng(4))
    assert gen_raw.shape == p.frame_shape and gen_raw.dtype == np.uint16
    assert gen_raw.max() <= 2**p.bit_depth - 1
    outside = np.ones(p.frame_shape, bool)
    outside[p.offset_y:p.offset_y + p.area_height, p.offset_x:p.offset_x + p.area_width] = False
    if outside.any():
        assert abs(gen_raw[outside].mean() - 32.0) < 1.0  # dark level outside the filter area


@pytest.fixture(scope="module")
def scene():
    """A drive frame with sun and shade on the road, calibrated to reflectance."""
    p = load_profile("hsi-drive")
    gen = DriveGenerator(p, seed=3, shadow_amount=0.5, illumination_variation=0.0, render_cameras=False)
    frame = gen.frame(0)
    refl = reflectance_cube(frame.raw, *gen.references(), p)
    materials = frame.layout.material_ids[2::5, 2::5][:p.cube_height, :p.cube_width]
    return p, frame, refl, materials


def test_sunlit_vegetation_shows_red_edge(scene):
    p, frame, refl, materials = scene
    green = np.isin(materials, [MATERIAL_IDS[m] for m in ("grass", "foliage_deciduous", "foliage_conifer")])
    sunlit = green & (frame.sun > 0.95)
    assert sunlit.sum() > 500
    nir, red = p.band_nearest(807.63), p.band_nearest(679.14)
    assert np.median(refl[nir][sunlit] / refl[red][sunlit]) > 3


def test_shade_is_darker_but_normalised_spectra_agree(scene):
    p, frame, refl, materials = scene
    asphalt = (materials == MATERIAL_IDS["asphalt"]) & (frame.labels == ROAD)
    sunlit, shaded = asphalt & (frame.sun > 0.95), asphalt & (frame.sun < 0.05)
    assert sunlit.sum() > 500 and shaded.sum() > 500
    sun_spec, shade_spec = refl[:, sunlit], refl[:, shaded]
    assert shade_spec.sum(0).mean() < 0.5 * sun_spec.sum(0).mean()

    def pn(s):
        return (s / s.sum(0)).mean(1)

    gap = np.abs(pn(sun_spec) - pn(shade_spec)).sum()
    grass = (materials == MATERIAL_IDS["grass"]) & (frame.sun > 0.95)
    other_material = np.abs(pn(sun_spec) - pn(refl[:, grass])).sum()
    assert gap < 0.12 and gap < 0.4 * other_material

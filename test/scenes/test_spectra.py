import numpy as np
import pytest

from hsi_xai_node.classes import DETECTION_CLASSES, SEGMENTATION_CLASSES, colourise
from hsi_xai_node.scenes import spectra as sp

WL = sp.WAVELENGTHS_NM


def at(spectrum, nm):
    return float(np.interp(nm, WL, spectrum))


def test_grid_matches_vendor_responses():
    assert WL.shape == (601,) and WL[0] == 400 and WL[-1] == 1000 and np.all(np.diff(WL) == 1)


@pytest.mark.parametrize("name", ["grass", "foliage_deciduous", "foliage_conifer"])
def test_green_vegetation_has_red_edge_and_water_dip(name):
    r = sp.reflectance(name)
    assert at(r, 800) / at(r, 670) > 5
    assert 0.03 <= at(r, 670) <= 0.06                      # chlorophyll well
    assert at(r, 550) > at(r, 500) and at(r, 550) > at(r, 620)  # green peak
    assert at(r, 700) < 0.5 * at(r, 750)                   # edge between 700 and 750 nm
    assert at(r, 970) < at(r, 900) - 0.02                   # liquid water


def test_road_materials():
    band = (WL >= 550) & (WL <= 1000)
    asphalt = sp.reflectance("asphalt")
    assert asphalt[band].max() < 0.15 and asphalt.min() > 0.05
    assert np.all(np.diff(asphalt) >= 0)  # nearly flat, slowly rising
    for paint in ("paint_white", "paint_yellow"):
        assert sp.reflectance(paint)[(WL >= 560)].min() > 0.5
    assert at(sp.reflectance("paint_yellow"), 450) < 0.2
    concrete = sp.reflectance("concrete")
    assert 0.24 <= at(concrete, 550) < at(concrete, 900) <= 0.36


def test_other_materials():
    cone = sp.reflectance("cone_orange")
    assert at(cone, 540) < 0.15 and at(cone, 620) > 0.6
    red, blue = sp.reflectance("car_paint_red"), sp.reflectance("car_paint_blue")
    assert at(red, 500) < 0.1 and at(red, 650) > 0.5 and at(blue, 850) > 0.4  # paints bright in NIR
    skin = sp.reflectance("skin")
    assert at(skin, 542) < at(skin, 530) and at(skin, 800) > 0.5
    for m in sp.MATERIALS:
        assert m.reflectance.shape == WL.shape and 0 <= m.reflectance.min() and m.reflectance.max() <= 1


def test_daylight():
    light = sp.daylight(45.0)
    sun, sky = light.sun, light.sky
    # skylight (and sky radiance) is bluer than the sun
    assert at(sky, 450) / at(sky, 850) > 3 * at(sun, 450) / at(sun, 850)
    assert at(light.sky_radiance, 450) / at(light.sky_radiance, 850) > at(sun, 450) / at(sun, 850)
    # absorption bands: O2 A at 760 nm, water vapour at 820 and 940 nm
    assert at(sun, 760.5) < 0.6 * 0.5 * (at(sun, 750) + at(sun, 775))
    assert at(sun, 935) < 0.6 * 0.5 * (at(sun, 880) + at(sun, 1000))
    assert at(sun, 822) < 0.95 * 0.5 * (at(sun, 800) + at(sun, 850))
    # a low sun is dimmer and redder
    low = sp.daylight(15.0).sun
    assert at(low, 600) < 0.5 * at(sun, 600)
    assert at(low, 450) / at(low, 850) < at(sun, 450) / at(sun, 850)
    # shadows see less than half the full-sun light everywhere
    assert np.all(light.diffuse < 0.5 * light.total)


def test_thermal_properties_and_bands():
    mats = {m.name: m for m in sp.MATERIALS}
    assert mats["skin"].temperature_k > mats["cotton_dark"].temperature_k > sp.AMBIENT_K + 5
    assert abs(mats["asphalt"].temperature_k - sp.AMBIENT_K) < 1e-9
    assert mats["sky"].temperature_k < sp.AMBIENT_K - 30
    fir = sp.ThermalBand(sp.FIR_BAND_UM)
    for t in (250.0, 290.0, 306.0):
        assert fir.brightness_temperature(fir.radiance(t)) == pytest.approx(t, abs=0.01)
    # Stefan-Boltzmann sanity: 8-14 um carries ~38% of a 300 K body's exitance
    share = np.pi * fir.radiance(300.0) / (5.670374e-8 * 300.0**4)
    assert 0.3 < share < 0.45


def test_class_tables_and_colourise():
    assert [c.name for c in SEGMENTATION_CLASSES] == ["unlabelled", "road", "road_marks", "vegetation", "sky",
                                                      "other"]
    assert [c.name for c in DETECTION_CLASSES] == ["bike", "car", "car_stop", "color_cone", "person"]
    labels = np.array([[0, 1], [4, 5]], np.uint8)
    img = colourise(labels)
    assert img.shape == (2, 2, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (0, 0, 0) and tuple(img[1, 0]) == SEGMENTATION_CLASSES[4].bgr

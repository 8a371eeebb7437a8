"""Calibration parsing: values against the vendor files, and every malformed-file error."""

import hashlib
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from hsi_xai_node.errors import CalibrationError
from hsi_xai_node.sensor.calibration import BUNDLED_XML, load_profile, parse_imec_xml
from test.conftest import SHARED_IMEC


def _raw_floats(text):
    return np.array([float(v) for v in text.split(",")])


def test_bundled_files_are_the_vendor_files():
    if not SHARED_IMEC.is_dir():
        pytest.skip(f"vendor files not found at {SHARED_IMEC}")
    for name, path in BUNDLED_XML.items():
        original = SHARED_IMEC / path.name
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(original.read_bytes()).digest(), name


def test_v1_geometry_and_peaks(imec_v1):
    p = imec_v1
    assert (p.sensor_width, p.sensor_height) == (2048, 1088)
    assert (p.offset_x, p.offset_y, p.area_width, p.area_height) == (0, 0, 2045, 1085)
    assert (p.pattern_width, p.pattern_height, p.bit_depth) == (5, 5, 10)
    assert p.cube_shape == (25, 217, 409)
    first = p.peaks[0][0]
    assert first.order == 1
    assert first.wavelength_nm == pytest.approx(915.5427599261824)
    assert first.fwhm_nm == pytest.approx(17.37603305785124)
    assert first.contribution == pytest.approx(0.476535823986683)
    second = p.peaks[0][1]
    assert (second.order, second.wavelength_nm) == (2, pytest.approx(855.4715447764027))
    assert p.peaks[24][0].wavelength_nm == pytest.approx(713.42, abs=0.01)
    # band i sits at tile row i // 5, col i % 5
    assert p.band_position(7) == (1, 2)
    assert p.responses.shape == (25, 601)
    assert p.response_wavelengths_nm[[0, -1]].tolist() == [400.0, 1000.0]
    assert [c.name for c in p.optics] == ["filter_lp_675_eo", "filter_sp_975_eo"]


def test_v1_responses_peak_at_first_order_peaks(imec_v1):
    p = imec_v1
    wl = p.response_wavelengths_nm
    argmax = wl[np.argmax(p.responses, axis=1)]
    leaky = {4, 20, 21}  # maximum is a 650-670 nm leak blocked by the 675 nm long-pass filter
    for b in range(25):
        if b in leaky:
            assert argmax[b] < 675
            # through the whole optical path the long-pass filter cuts the leak; for bands 4 and 20
            # the first-order peak is the maximum again, band 21's leak at 676 nm sits on the
            # filter edge and stays larger (0.0089 vs 0.0068 at its 926 nm peak)
            eff = p.effective_responses(wl)[b]
            at_peak = eff[np.abs(wl - p.peaks[b][0].wavelength_nm) < 5].max()
            if b == 21:
                assert wl[np.argmax(eff)] == 676 and at_peak == pytest.approx(0.00683, abs=1e-4)
            else:
                assert at_peak == eff.max()
        else:
            assert abs(argmax[b] - p.peaks[b][0].wavelength_nm) <= 2.0, b


def test_v1_correction_matrix(imec_v1):
    c = imec_v1.correction("hsi")
    assert c.matrix.shape == (25, 25)
    np.testing.assert_allclose(c.matrix.sum(axis=1), 1.0, atol=1e-5)
    assert 1e5 < np.linalg.cond(c.matrix) < 1e6
    assert c.virtual_wavelengths_nm[0] == pytest.approx(688.5803918332383)
    assert c.matrix[0, 0] == pytest.approx(-0.0652816)
    # columns are band indices: each virtual band's largest coefficient is the band with its peak
    peaks = imec_v1.band_wavelengths_nm
    for k, wl in enumerate(c.virtual_wavelengths_nm):
        if round(wl, 2) in (916.66, 926.00):  # near-duplicates of bands 0 and 1
            continue
        assert peaks[np.argmax(c.matrix[k])] == pytest.approx(wl, abs=0.01)


def test_v0_geometry_peaks_and_positions(imec_v0):
    p = imec_v0
    assert (p.offset_x, p.offset_y, p.area_width, p.area_height) == (0, 3, 2045, 1080)
    assert p.cube_shape == (25, 216, 409)  # HSI-Drive's cube size
    assert p.bit_depth == 10
    assert p.peaks[0][0].wavelength_nm == pytest.approx(614.9032232924481)
    assert p.peaks[0][0].contribution is None
    assert p.peaks[24][0].wavelength_nm == pytest.approx(669.6057303643352)
    assert [c.name for c in p.optics] == ["bandpass_600xi-875eo"]


def test_v0_correction_columns_are_position_indices(imec_v0):
    c = imec_v0.correction()
    peaks = imec_v0.band_wavelengths_nm
    # the virtual bands are the band peaks themselves, sorted
    np.testing.assert_allclose(np.sort(peaks), c.virtual_wavelengths_nm, atol=1e-3)
    for wl, band in [(636.4337, 18), (653.0405, 15), (661.5442, 16), (669.6057, 24), (714.1334, 14),
                     (815.7195, 5)]:
        k = int(np.argmin(np.abs(c.virtual_wavelengths_nm - wl)))
        assert int(np.argmax(np.abs(c.matrix[k]))) == band
        assert peaks[band] == pytest.approx(wl, abs=1e-3)


def test_v0_positions_come_from_the_attribute(tmp_path, imec_v0):
    """Swap two bands' order in the file: the parser must follow pattern_position_index."""
    text = (BUNDLED_XML["imec-600-875"]).read_text()
    root = ET.fromstring(text)
    bands = root.find("filter_info/bands")
    b0, b1 = list(bands)[:2]
    bands.remove(b0)
    bands.insert(1, b0)
    path = tmp_path / "swapped.xml"
    path.write_bytes(ET.tostring(root))
    p = parse_imec_xml(path)
    np.testing.assert_array_equal(p.band_wavelengths_nm, imec_v0.band_wavelengths_nm)


def test_hsi_drive_builtin(hsi_drive):
    p = hsi_drive
    assert p.cube_shape == (25, 216, 409)
    assert (p.offset_y, p.area_height, p.area_width) == (3, 1080, 2045)
    assert p.band_wavelengths_nm[12] == 731.88  # central band
    assert p.band_wavelengths_nm[[8, 21, 24]].tolist() == [770.58, 858.95, 944.49]  # bands 9, 22, 25
    assert [pk.wavelength_nm for pk in p.peaks[21]] == [858.95, 577.147]
    wl = np.arange(400, 1001.0)
    resp = p.effective_responses(wl)
    assert wl[np.argmax(resp[12])] == 732
    # the second-order peak of band 22 (1-based) shows up at 577 nm
    assert resp[21][wl == 577][0] > 0.2 and resp[20][wl == 577][0] < 1e-6


def test_flip_vertical_mirrors_area_and_rows(imec_v0):
    f = load_profile("imec-600-875", flip_vertical=True)
    assert f.offset_y == 1088 - 1080 - 3
    np.testing.assert_array_equal(f.layout, imec_v0.layout[::-1])


def test_unknown_profile_name():
    with pytest.raises(CalibrationError, match="unknown sensor profile 'nope'.*hsi-drive"):
        load_profile("nope")


# --- damaged copies ------------------------------------------------------------------------

def _damaged(tmp_path, source, edit):
    text = BUNDLED_XML[source].read_text()
    new = edit(text)
    assert new != text, "the edit did not change the file"
    path = tmp_path / "damaged.xml"
    path.write_text(new)
    return path


def _drop_band(text, index):
    return re.sub(rf'<band version="3" index="{index}".*?</band>', "", text, count=1, flags=re.S)


def _shorten_first_response(text):
    return re.sub(r'(<response nr_elements="601">[^,]+,)', r'<response nr_elements="601">', text, count=1)


DAMAGE = [
    ("truncated", "imec-665-975", lambda t: t[: len(t) // 2], "not well-formed XML"),
    ("missing band", "imec-665-975", lambda t: _drop_band(t, 7), r"missing band\(s\) \[7\]"),
    ("wrong pattern size", "imec-665-975",
     lambda t: t.replace("<pattern_width>5</pattern_width>", "<pattern_width>4</pattern_width>"),
     "band index 20 outside 0..19 for a 20-band pattern"),
    ("short response", "imec-665-975", _shorten_first_response,
     "band 0 <response>: has 600 values but declares nr_elements=601"),
    ("short response, declared", "imec-665-975",
     lambda t: _shorten_first_response(t).replace('<response nr_elements="601">', '<response nr_elements="600">', 1),
     "band 0 <response>: has 600 values, expected 601"),
    ("area outside sensor", "imec-665-975",
     lambda t: t.replace("<offset_x>0</offset_x>", "<offset_x>8</offset_x>", 1),
     r"filter area 2045x1085 at \(8, 0\) lies outside the 2048x1088 sensor"),
    ("not a number", "imec-600-875",
     lambda t: t.replace("<width>2048</width>", "<width>wide</width>", 1),
     "<width> under <sensor_info> is not a number: 'wide'"),
    ("missing element", "imec-600-875",
     lambda t: re.sub(r"<pattern_height>5</pattern_height>", "", t, count=1),
     "missing <pattern_height> under <filter_info>"),
    ("v0 repeated band", "imec-600-875",
     lambda t: t.replace('pattern_position_index="1"', 'pattern_position_index="0"', 1),
     "band index 0 appears twice"),
    ("v0 correction row length", "imec-600-875",
     lambda t: t.replace('<custom_spectral_correction version="0" nr_elements="25">\n                        <data>0.006918495, ',
                         '<custom_spectral_correction version="0" nr_elements="24">\n                        <data>', 1),
     "virtual band 0 <custom_spectral_correction>: has 24 values, expected 25"),
    ("unsupported version", "imec-600-875",
     lambda t: t.replace('<sensor_calibration version="0">', '<sensor_calibration version="7">', 1),
     "unsupported format version '7'"),
]


@pytest.mark.parametrize("source,edit,message", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_damaged_file_raises_one_clear_error(tmp_path, source, edit, message):
    path = _damaged(tmp_path, source, edit)
    with pytest.raises(CalibrationError) as err:
        load_profile(path)
    assert str(path) in str(err.value)
    assert re.search(message, str(err.value)), str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(CalibrationError, match="no such file"):
        parse_imec_xml(tmp_path / "absent.xml")

"""Calibration parsing: values against the vendor files, and every malformed-file error."""

import hashlib
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from hsi_xai_node.errors import CalibrationError
from hsi_xai_node.sensor.calibration import BUNDLED_XML, load_profile, parse_imec_xml


def _raw_floats(text):
    return np.array([float(v) for v in text.split(",")])


# SHA-256 of the vendor files as published (swisssmartfarming, MIT): the package ships them unchanged
VENDOR_SHA256 = {"CMV2K-SSM5x5-600_875-5.5.9.2.xml": "69cbf4272447f0b7b4e2cca568d0715e67a7faed15b80dc4a6701202f0fc033e",
                 "CMV2K-SSM5x5-665_975-13.8.15.1_HS02-NIR.xml":
                 "bd9b5db4666c934d7dc7d459d4fb3af11a2c3341e7668adb86a0e70e42f7d75d"}


def test_bundled_files_are_the_vendor_files():
    for name, path in BUNDLED_XML.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == VENDOR_SHA256[path.name], name


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
     r"band index\(es\) \[20, 21, 22, 23, 24\] outside 0..19 for a 20-band pattern"),
    ("short response", "imec-665-975", _shorten_first_response,
     r"bands\[0\].response: has 600 values but declares nr_elements=601"),
    ("short response, declared", "imec-665-975",
     lambda t: _shorten_first_response(t).replace('<response nr_elements="601">', '<response nr_elements="600">', 1),
     "band 0 <response>: has 600 values, expected 601"),
    ("area outside sensor", "imec-665-975",
     lambda t: t.replace("<offset_x>0</offset_x>", "<offset_x>8</offset_x>", 1),
     r"filter area 2045x1085 at \(8, 0\) lies outside the 2048x1088 sensor"),
    ("not a number", "imec-600-875",
     lambda t: t.replace("<width>2048</width>", "<width>wide</width>", 1),
     "sensor_width: Input should be a valid integer, unable to parse string as an integer \\(got 'wide'\\)"),
    ("missing element", "imec-600-875",
     lambda t: re.sub(r"<pattern_height>5</pattern_height>", "", t, count=1),
     "missing <pattern_height> under <filter_info>"),
    ("v0 repeated band", "imec-600-875",
     lambda t: t.replace('pattern_position_index="1"', 'pattern_position_index="0"', 1),
     r"band index\(es\) \[0\] appear more than once"),
    ("v0 correction row length", "imec-600-875",
     lambda t: t.replace('<custom_spectral_correction version="0" nr_elements="25">\n                        <data>0.006918495, ',
                         '<custom_spectral_correction version="0" nr_elements="24">\n                        <data>', 1),
     "correction matrix 'custom' virtual band 0: has 24 coefficients, expected 25"),
    # what a hostile user tried (issue 16): each was a foreign exception, a hang or a profile of nonsense
    ("pattern 1e400", "imec-665-975", lambda t: t.replace("<pattern_width>5<", "<pattern_width>1e400<", 1),
     r"pattern_width: Input should be a valid integer"),
    ("pattern 3.7", "imec-665-975", lambda t: t.replace("<pattern_width>5<", "<pattern_width>3.7<", 1),
     r"pattern_width: Input should be a valid integer"),
    ("negative pattern", "imec-665-975", lambda t: t.replace("<pattern_height>5<", "<pattern_height>-5<", 1),
     r"pattern_height: Input should be greater than or equal to 1"),
    ("pattern of 1e9 bands", "imec-665-975", lambda t: t.replace("<pattern_width>5<", "<pattern_width>1000000000<", 1),
     r"pattern_width: Input should be less than or equal to 16"),
    ("pattern of 1e6 rows", "imec-600-875", lambda t: t.replace("<pattern_height>5<", "<pattern_height>1000000<", 1),
     r"pattern_height: Input should be less than or equal to 16"),
    ("peak order 1.5", "imec-665-975", lambda t: t.replace('order="1"', 'order="1.5"', 1),
     r"bands\[0\].peaks\[0\].order: Input should be a valid integer"),
    ("empty peak order", "imec-665-975", lambda t: t.replace('order="1"', 'order=""', 1),
     r"bands\[0\].peaks\[0\].order: Input should be a valid integer"),
    ("nr_elements 1e20", "imec-665-975", lambda t: t.replace('<response nr_elements="601">', '<response nr_elements="1e20">', 1),
     r"bands\[0\].response: nr_elements='1e20' is not an integer"),
    ("NaN peak", "imec-665-975", lambda t: t.replace(">915.5427599261824<", ">nan<", 1),
     r"bands\[0\].peaks\[0\].wavelength_nm: must be a finite number"),
    ("infinite peak", "imec-665-975", lambda t: t.replace(">915.5427599261824<", ">inf<", 1),
     r"bands\[0\].peaks\[0\].wavelength_nm: (must be a finite number|Input should be less than)"),
    ("peak outside the grid", "imec-665-975", lambda t: t.replace(">915.5427599261824<", ">1500<", 1),
     r"band 0: peak \(order 1\) at 1500 nm lies outside the response grid"),
    ("zero FWHM", "imec-665-975", lambda t: t.replace(">17.37603305785124<", ">0<", 1),
     r"bands\[0\].peaks\[0\].fwhm_nm: Input should be greater than 0"),
    ("contribution 7", "imec-665-975", lambda t: t.replace(">0.476535823986683<", ">7<", 1),
     r"bands\[0\].peaks\[0\].contribution: Input should be less than or equal to 1"),
    ("negative QE", "imec-665-975", lambda t: t.replace(">0.04164058900541123<", ">-0.04<", 1),
     r"bands\[0\].peaks\[0\].qe: Input should be greater than or equal to 0"),
    ("repeated peak order", "imec-665-975", lambda t: t.replace('order="2"', 'order="1"', 1),
     r"band 0: peak orders \[1, 1\] repeat"),
    ("no first-order peak", "imec-665-975", lambda t: t.replace('order="1"', 'order="3"', 1),
     r"band 0: no first-order peak \(orders \[3, 2\]\)"),
    ("duplicated element", "imec-665-975",
     lambda t: t.replace("<offset_x>0</offset_x>", "<offset_x>0</offset_x><offset_x>5</offset_x>", 1),
     r"<offset_x> appears 2 times under <filter_area> \(once expected\)"),
    ("unsupported version", "imec-600-875",
     lambda t: t.replace('<sensor_calibration version="0">', '<sensor_calibration version="7">', 1),
     "unsupported format version '7'"),
]


@pytest.mark.parametrize("source,edit,message", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_damaged_file_raises_one_clear_error(tmp_path, source, edit, message):
    import time

    path = _damaged(tmp_path, source, edit)
    t0 = time.perf_counter()
    with pytest.raises(CalibrationError) as err:
        load_profile(path)
    assert time.perf_counter() - t0 < 1.0  # no input makes the parser work (or allocate) far beyond the file
    assert str(path) in str(err.value) and len(str(err.value)) <= 600 + len(str(path))
    assert re.search(message, str(err.value)), str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(CalibrationError, match="no such file"):
        parse_imec_xml(tmp_path / "absent.xml")

"""The demo writes what it says: images that decode to the pipeline's own outputs."""

import json

import cv2
import numpy as np

from hsi_xai_node.classes import colourise
from hsi_xai_node.cli import main
from hsi_xai_node.demo import FALSE_COLOUR_NM
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile
from hsi_xai_node.sensor.frontend import FrontEnd
from hsi_xai_node.sensor.radiometry import false_colour


def test_demo_cli_writes_page_and_images_equal_to_the_pipeline(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--frames", "2", "--stride", "5", "--seed", "3",
                 "--backend", "ort-cpu"]) == 0
    page = (tmp_path / "index.html").read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 2 and summary["profile"] == "hsi-drive"
    for src in ["spectra_reflectance.png", "spectra_pn.png", "frames/000_0.png", "frames/001_10.png"]:
        assert f"'{src}'" in page
        assert cv2.imread(str(tmp_path / src)) is not None, src

    # independently regenerate frame 5 and compare with the PNGs (lossless round trip)
    profile = load_profile("hsi-drive")
    gen = DriveGenerator(profile, seed=3)
    frame = gen.frame(5)
    dark, white = gen.references()
    result = FrontEnd(profile, dark, white).process(frame.raw)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "frames/001_0.png")),
                                  false_colour(result.reflectance, FALSE_COLOUR_NM))
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "frames/001_1.png")), colourise(frame.labels))
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "frames/001_7.png")), frame.cameras["rgb"].image)
    # the model's outputs, as the pipeline computes them for the same frame
    from hsi_xai_node.runtime import Pipeline, PipelineConfig
    out = Pipeline(PipelineConfig(backend="ort-cpu"), dark, white).process(frame.raw)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "frames/001_2.png")), out.segmentation)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "frames/001_3.png")), out.gradcam_overlay)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "frames/001_4.png")), out.activation_overlay)
    assert summary["label_accuracy"] > 0.9 and summary["activation_residual_max"] < 1e-5

    # PN brings sun and shadow spectra of the road together (paper 000's reason for PN)
    spectra = summary["class_spectra"]["road"]
    sun, shade = np.array(spectra["sun"]), np.array(spectra["shadow"])
    assert np.abs(sun.sum() - 1) < 1e-3 and np.abs(shade.sum() - 1) < 1e-3
    assert np.abs(sun - shade).sum() < 0.2


def test_cli_reports_bad_input_in_one_line(capsys):
    assert main(["profiles", "no-such-profile"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hsi-xai profiles: error: unknown sensor profile 'no-such-profile'")
    assert main(["profiles"]) == 0
    assert "imec-665-975" in capsys.readouterr().out

"""The demo: a generated drive recorded as a bag, replayed, and a report that renders."""

import json
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from hsi_xai_node.classes import DETECTION_CLASSES, colourise
from hsi_xai_node.cli import main
from hsi_xai_node.runtime import Pipeline, PipelineConfig
from hsi_xai_node.runtime.detection import DetectionPipeline, DetectionPipelineConfig
from hsi_xai_node.scenes.drive import DriveGenerator
from hsi_xai_node.sensor.calibration import load_profile


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--frames", "2", "--stride", "5", "--seed", "3", "--backend", "ort-cpu",
                 "--no-progress"]) == 0
    return out


def test_demo_writes_bags_and_a_report_of_the_pipelines_outputs(demo):
    assert (demo / "input_bag" / "metadata.yaml").is_file() and (demo / "output_bag" / "metadata.yaml").is_file()
    page = (demo / "index.html").read_text()
    summary = json.loads((demo / "summary.json").read_text())
    assert summary["frames"] == 2 and summary["profile"] == "hsi-drive" and summary["label_accuracy"] > 0.9
    for src in ["spectral_attribution.png", "spectra_pn.png", "frames/000_0.png", "frames/001_9.png"]:
        assert f"'{src}'" in page and cv2.imread(str(demo / src)) is not None, src
    # frame 5 regenerated here: the report's images (read back from the output bag) are the pipeline's
    profile = load_profile("hsi-drive")
    gen = DriveGenerator(profile, seed=3)
    frame = gen.frame(5)
    out = Pipeline(PipelineConfig(backend="ort-cpu"), *gen.references()).process(frame.raw)
    for i, expected in enumerate([out.preview, colourise(frame.labels), out.segmentation, out.gradcam_overlay,
                                  out.activation_overlay]):
        np.testing.assert_array_equal(cv2.imread(str(demo / f"frames/001_{i}.png")), expected, err_msg=str(i))
    detector = DetectionPipeline(DetectionPipelineConfig(backend="ort-cpu"))
    detected = detector.process({n: c.image for n, c in frame.cameras.items()})
    np.testing.assert_array_equal(cv2.imread(str(demo / "frames/001_5.png")), detected.detection_overlay)
    np.testing.assert_array_equal(cv2.imread(str(demo / "frames/001_7.png")), frame.cameras["rgb"].image)
    d = summary["detection"]
    assert d["frames"] == 2 and d["detections"] > 0 and set(d["ap"]) == {c.name for c in DETECTION_CLASSES}
    assert "mAP@0.5" in page
    attribution = summary["spectral_attribution"]
    assert set(attribution) == {"road", "road_marks", "vegetation", "sky", "other"}
    assert all(len(v["all"]) == 25 and np.isfinite(v["all"]).all() for v in attribution.values())


def test_report_renders_its_images_in_headless_chromium(demo, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path}", "--virtual-time-budget=10000", "--dump-dom",
                          (demo / "index.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded, dom[:500]
    assert int(loaded.group(1)) == int(loaded.group(2)) >= 20  # every image decoded, two frames' worth


def test_cli_reports_bad_input_in_one_line(capsys):
    assert main(["profiles", "no-such-profile"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hsi-xai profiles: error: unknown sensor profile 'no-such-profile'")
    assert main(["profiles"]) == 0
    assert "imec-665-975" in capsys.readouterr().out


def test_demo_runs_without_torch(tmp_path):
    # the README's demo command installs no torch (`pip install -e .`): nothing on its path may import it
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
            "from hsi_xai_node.cli import main\n"
            f"sys.exit(main(['demo', '--out', {str(tmp_path / 'demo')!r}, '--frames', '1', '--backend', 'ort-cpu', "
            "'--no-progress']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["frames"] == 1 and summary["detection"]["frames"] == 1

"""The demo: a generated drive recorded as a bag, replayed, and a report that renders."""

import json
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
from test.chromium import render
from test.conftest import REPO


SEED = 4001  # a drive no bundled model was trained or validated on


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--frames", "2", "--stride", "5", "--seed", str(SEED), "--backend",
                 "ort-cpu", "--no-progress"]) == 0
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
    gen = DriveGenerator(profile, seed=SEED)
    frame = gen.frame(5)
    out = Pipeline(PipelineConfig(backend="ort-cpu"), *gen.references()).process(frame.raw)
    for i, expected in enumerate([out.preview, colourise(frame.labels), out.segmentation, out.gradcam_overlay,
                                  out.activation_overlay]):
        np.testing.assert_array_equal(cv2.imread(str(demo / f"frames/001_{i}.png")), expected, err_msg=str(i))
    detector = DetectionPipeline(DetectionPipelineConfig(backend="ort-cpu"))
    detected = detector.process({n: c.image for n, c in frame.cameras.items()})
    np.testing.assert_array_equal(cv2.imread(str(demo / "frames/001_5.png")), detected.detection_overlay)
    np.testing.assert_array_equal(cv2.imread(str(demo / "frames/001_8.png")), frame.cameras["rgb"].image)
    assert "'frames/001_shares.png'" in page and "camera shares per detection" in page
    d = summary["detection"]
    assert d["frames"] == 2 and d["detections"] > 0 and set(d["ap"]) == {c.name for c in DETECTION_CLASSES}
    assert "mAP@0.5" in page
    # every figure says which drive it comes from, and that no model saw it
    drive = summary["drive"]
    assert drive["seed"] == SEED and drive["held_out"] and drive["seen_by"] == {} and drive["frames"] == "0-5 (every 5)"
    assert drive["splits"]["unet_bundled_25pn"]["train"] == "0-23" and drive["splits"]["efficientdet_rgb_mir"]["train"] == "0-159"
    assert page.count(f"drive seed {SEED}, frames 0-5 (every 5), held out") >= 2  # the page's note and the AP section
    assert "'class_legend.png'" in page and cv2.imread(str(demo / "class_legend.png")) is not None
    attribution = summary["spectral_attribution"]
    assert set(attribution) == {"road", "road_marks", "vegetation", "sky", "other"}
    assert all(len(v["all"]) == 25 and np.isfinite(v["all"]).all() for v in attribution.values())


def test_report_renders_its_images_in_headless_chromium_at_1400_px(demo, tmp_path):
    shot = tmp_path / "report.png"
    probe = render(demo / "index.html", tmp_path / "profile", width=1400, screenshot=shot)
    assert probe["loaded"] == probe["images"] >= 20  # every image decoded, two frames' worth
    assert probe["overflow_x"] == 0  # fits a 1400-px window: no horizontal scroll
    png = cv2.imread(str(shot))
    assert png is not None and png.shape[1] == 1400 and png.std() > 10  # a real picture, not a blank page


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


def test_default_demo_drive_is_held_out_from_every_bundled_model():
    from hsi_xai_node.demo import demo_cards
    from hsi_xai_node.drive_splits import DEMO_SEED, card_splits, seen_by
    from hsi_xai_node.transports.config import load_config

    cards = demo_cards(load_config())
    assert set(cards) == {"unet_bundled_25pn", "efficientdet_rgb_mir"}
    for path in cards.values():  # the cards really record their splits: the check has something to check
        splits = card_splits(path)
        assert splits["train"] and splits["val"] and DEMO_SEED not in splits["train"] + splits["val"]
    assert seen_by(DEMO_SEED, cards) == {}
    assert seen_by(7, cards) == {"unet_bundled_25pn": "train", "efficientdet_rgb_mir": "train"}
    assert seen_by(1004, cards) == {"efficientdet_rgb_mir": "val"}  # the U-Nets validated on 1000-1003 only
    assert seen_by(2003, cards) == {}  # a test drive: held out from fitting


def test_demo_refuses_a_training_drive_unless_asked_and_then_says_so(capsys):
    from hsi_xai_node.demo import drive_provenance, provenance_text

    # refused before anything is written: the error names the models and the split
    assert main(["demo", "--out", "/nonexistent/never", "--seed", "7", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "drive seed 7 was used to fit the models (unet_bundled_25pn: train, efficientdet_rgb_mir: train)" in err
    assert "--allow-training-drive" in err
    cards = {"m": str(REPO / "models" / "unet_bundled_25pn.json")}
    p = drive_provenance(7, 25, 1, cards, allow_seen=True)
    assert not p["held_out"] and "MEASURED ON DATA THE MODELS WERE FITTED ON (m (train))" in provenance_text(p)


def test_demo_never_writes_into_a_directory_of_someone_elses(tmp_path, capsys):
    (tmp_path / "important.txt").write_text("keep me")
    assert main(["demo", "--out", str(tmp_path), "--frames", "1", "--no-progress"]) == 2
    assert "already holds files that hsi-xai demo did not write (important.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["important.txt"]


def test_demo_bags_record_qos_and_leave_the_raw_mosaic_out(demo):
    """Read with the independent mcap reader: references latched in both bags, outputs with the node's output
    QoS, cameras as their driver offers them; the output bag has no raw mosaic (it is in the input bag)."""
    import yaml
    from mcap.reader import make_reader

    def channels(bag):
        (file,) = bag.glob("*.mcap")
        with open(file, "rb") as f:
            summary = make_reader(f).get_summary()
        return {c.topic: yaml.safe_load(c.metadata["offered_qos_profiles"])[0] for c in summary.channels.values()}

    def kind(q):
        return q["reliability"], q["durability"], q["depth"]

    qin, qout = channels(demo / "input_bag"), channels(demo / "output_bag")
    for q in (qin, qout):
        assert kind(q["/hsi/dark_reference"]) == kind(q["/hsi/white_reference"]) == ("reliable", "transient_local", 1)
        assert kind(q["/rgb/image_raw"]) == ("reliable", "volatile", 10)
    assert kind(qin["/hsi/image_raw"]) == ("reliable", "volatile", 10)
    assert "/hsi/image_raw" not in qout
    for topic in ("/hsi_xai/labels", "/hsi_xai/gradcam_overlay", "/hsi_xai/detection_overlay", "/hsi_xai/detections"):
        assert kind(qout[topic]) == ("reliable", "volatile", 5), topic
    assert kind(qout["/diagnostics"]) == ("reliable", "volatile", 10)

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
    for src in ["spectral_attribution.png", "spectra_pn.png", "frames/000_0.png", "frames/001_10.png"]:
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
    np.testing.assert_array_equal(cv2.imread(str(demo / "frames/001_9.png")), frame.cameras["rgb"].image)
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
    assert all(len(v[k]) == 25 and np.isfinite(v[k]).all() for v in attribution.values()
               for k in ("gradient x input", "DeepLIFT"))
    # DeepLIFT sums to S(x) - S(0) per class (float32 terms over 25 x 208 x 400 inputs: about 1e-6 of the score here)
    assert summary["deeplift_residual_max"] < 1e-4
    assert f"over those frames and classes was {summary['deeplift_residual_max']:.1e}" in page


@pytest.mark.parametrize("width", [1400, 390])  # a desktop window, a phone
def test_report_renders_readably_in_headless_chromium(demo, tmp_path, width):
    from hsi_xai_node.report_page import MIN_TEXT_PX, PLOT_FONT_PT

    shot = tmp_path / "report.png"
    probe = render(demo / "index.html", tmp_path / "profile", width=width, screenshot=shot)
    assert probe["loaded"] == probe["images"] >= 20  # every image decoded, two frames' worth
    assert probe["overflow_x"] == 0  # fits the window: no horizontal scroll of the page
    assert probe["min_font_px"] >= MIN_TEXT_PX  # no text smaller than that
    # plots are shown at their natural size (scrolling in their box on a phone), so their text is the plots' font
    assert probe["min_plot_scale"] >= 0.999 and PLOT_FONT_PT * 100 / 72 >= MIN_TEXT_PX
    png = cv2.imread(str(shot))
    assert png is not None and png.shape[1] == width and png.std() > 10  # a real picture, not a blank page


def test_every_figure_names_its_inputs_and_the_counts_add_up(demo):
    page = (demo / "index.html").read_text()
    summary = json.loads((demo / "summary.json").read_text())
    run = summary["run"]
    assert page.index("What ran") < page.index("Replay")  # the page opens with what ran
    for needle in ("unet_bundled_25pn (card sha256 ", "efficientdet_rgb_mir (card sha256 ", "ort-cpu (named in the "
                   "configuration)", "segmentation: IEEE float32; detection: IEEE float32", f"drive seed {SEED}", "frames 2, stride 5", "UTC", " cores (", "input bag "):
        assert needle in " ".join(str(v) for v in run.values()), needle
        assert needle in page, needle
    card = json.loads((REPO / "models" / "unet_bundled_25pn.json").read_text())
    assert card["sha256"][:12] in run["models"]
    d = summary["detection"]
    for cls in d["ap"]:  # every detection is a true positive, a false positive or on an ignore region
        assert d["per_class"][cls] == d["tp"][cls] + d["fp"][cls] + d["on_ignore"][cls], cls
    total = sum(d["tp"].values()) + sum(d["fp"].values()) + sum(d["on_ignore"].values())
    assert d["detections"] == total
    assert (f"{d['detections']} detections = {sum(d['tp'].values())} true positives + {sum(d['fp'].values())} "
            f"false positives + {sum(d['on_ignore'].values())} on ignore regions") in page
    present = [c for c, n in d["objects"].items() if n]
    assert d["map_over"] == present and f"the mean AP over the {len(present)} classes with objects" in page
    # each frame says how many objects it holds, and the ground truth is drawn
    assert page.count("objects to find and") == 2 and page.count("<figcaption>ground truth on the RGB camera") == 2
    # a class's maps against the card's reference: the table and, where dim, the sentence
    assert "How strong each class's maps are against the card's scale" in page
    assert {r["overlay"] for r in summary["map_strength"]} >= {"activation", "seg_gradcam", "box_gradcam"}
    # every image opens full size
    import re
    assert all(f"<a href='{src}'>" in page for src in re.findall(r"<img[^>]* src='(frames/[^']+)'", page))
    assert summary["input_bag_mb"] > 1 and summary["output_bag_mb"] > 1 and summary["seconds"] > 0


def test_a_failed_demo_leaves_no_output(tmp_path, capsys):
    """A demo that fails part-way (the bundled model does not fit the imec-665-975 sensor) leaves neither its
    folder nor a temporary one; an earlier demo's output in the same place stays as it was."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--profile", "imec-665-975", "--frames", "1", "--backend", "ort-cpu",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


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
    for topic in ("/hsi_xai/labels", "/hsi_xai/gradcam_overlay", "/hsi_xai/detection/overlay", "/hsi_xai/detections"):
        assert kind(qout[topic]) == ("reliable", "volatile", 5), topic
    assert kind(qout["/diagnostics"]) == ("reliable", "volatile", 10)


def test_the_readme_and_help_quote_what_the_demo_measures(demo):
    """The README and `demo --help` quote one measured run (demo_facts.DEMO_RUN) and agree with each other; a demo
    run here writes bags of the same size per frame (the frames are fixed-size images: the sizes scale with the
    frame count), so a figure the code no longer produces fails here."""
    from hsi_xai_node.cli import build_parser
    from hsi_xai_node.demo_facts import DEMO_RUN

    readme = " ".join((REPO / "README.md").read_text().split())
    sizes = (f"input bag {DEMO_RUN['input_bag_mb']:.1f} MB, output bag {DEMO_RUN['output_bag_mb']:.1f} MB without the "
             f"raw mosaic (--copy-raw adds about {DEMO_RUN['copy_raw_mb']:.0f} MB); {DEMO_RUN['seconds']:.0f} s on "
             f"{DEMO_RUN['machine']}")
    assert sizes in readme
    parser = build_parser()
    demo_parser = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "demo")[1]
    assert sizes in " ".join(demo_parser.format_help().split())
    summary = json.loads((demo / "summary.json").read_text())
    references = 2 * 2048 * 1088 * 2 / 1e6  # the dark and white frames, in both bags whatever the frame count
    for key in ("input_bag_mb", "output_bag_mb"):
        per_frame = (summary[key] - references) / summary["frames"]
        quoted = (DEMO_RUN[key] - references) / DEMO_RUN["frames"]
        assert abs(per_frame / quoted - 1) < 0.10, (key, per_frame, quoted)
    assert abs(DEMO_RUN["copy_raw_mb"] - 25 * 2048 * 1088 * 2 / 1e6) < 2

"""`hsi-xai reliability` end to end on small settings: the report's numbers keep the papers' known answers."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from hsi_xai_node.cli import main


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_detector):
    out = tmp_path_factory.mktemp("reliability")
    pytest.importorskip("torch", reason="label randomisation trains a model: pip install -e '.[test]'")
    assert main(["reliability", "--out", str(out), "--frames", "1", "--rise-masks", "16", "--steps", "4",
                 "--cascade-steps", "2", "--threads", "1", "--detector", str(tiny_detector),
                 "--train-random-labels", "2", "--random-labels-size", "tiny"]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_conservativeness_and_sanity_sections(report):
    _, r = report
    cons = r["conservativeness"]
    assert cons["activation@dec1"]["conservative"] is True and cons["activation@dec1"]["max"] < 1e-6
    assert cons["seg_gradcam@dec1"]["conservative"] is False and cons["seg_gradcam@dec1"]["median"] > 0.1
    cascade = r["sanity"]["cascading"]
    assert [c["depth"] for c in cascade] == [1, r["sanity"]["layers"]] and cascade[0]["layer"] == "/head/Conv"
    deepest = cascade[-1]["methods"]
    assert abs(deepest["seg_gradcam"]["spearman"]) < 0.3  # the maps of a randomised model decorrelate
    labels = r["sanity"]["label_randomisation"]  # a (2-step, tiny) model trained on permuted labels
    assert set(labels) == {"activation", "seg_gradcam", "seg_gradcam_signed", "hires"}
    assert all(-1.0 <= v["spearman"] <= 1.0 and v["rows"] > 0 for v in labels.values())


def test_faithfulness_sections(report):
    _, r = report
    seg, det = r["segmentation_faithfulness"], r["detection_faithfulness"]
    assert set(seg) == {"activation", "seg_gradcam", "seg_gradcam_signed", "hires", "rise", "sidu"}
    assert set(det) == {"box_gradcam", "box_gradcam_signed", "rise", "sidu"}
    for rows in (seg, det):
        for v in rows.values():
            assert 0.0 <= v["deletion"] <= 1.5 and 0.0 <= v["insertion"] <= 1.5 and v["seconds_per_map"] > 0
    # Seg-Grad-CAM at the layer before the final 1x1 conv is the activation map times |region| / pixels:
    # the same ranking, hence the same curves (paper 000's point that CAM and Grad-CAM coincide there)
    assert seg["seg_gradcam_signed"]["deletion"] == pytest.approx(seg["activation"]["deletion"], abs=1e-9)
    assert seg["rise"]["seconds_per_map"] > seg["seg_gradcam"]["seconds_per_map"]


def test_page_renders_every_image(report, tmp_path):
    out, r = report
    page = (out / "index.html").read_text()
    images = re.findall(r"<img src='([^']+)'", page)
    assert "sanity_cascading.png" in images and all((out / i).is_file() for i in images)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          f"--user-data-dir={tmp_path}", "--virtual-time-budget=10000", "--dump-dom",
                          (out / "index.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    loaded = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert loaded and int(loaded.group(1)) == int(loaded.group(2)) == len(images)
    assert np.isfinite(r["segmentation_faithfulness"]["rise"]["insertion"])

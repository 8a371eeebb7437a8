"""Overlay scales measured by `hsi-xai calibrate-overlays`, against the node pipeline's own float class maps.

The 99th percentile of |map| over each class's predicted pixels, for every method at every layer asked: computed
here from `Pipeline.process(...).class_maps` (the runtime's graph, another build of the same maps) on the same
frame, and compared. A dataset (here generated drives through the datasets reader) is a source like the card's
validation drives.
"""

import numpy as np
import pytest

from hsi_xai_node.datasets import GeneratedDrives
from hsi_xai_node.overlay_calibration import segmentation_overlay_scales
from hsi_xai_node.runtime import Pipeline, PipelineConfig
from hsi_xai_node.scenes.drive import DriveGenerator
from test.conftest import REPO

MODEL = REPO / "models" / "unet_bundled_25pn.onnx"


def test_scales_are_the_99th_percentile_of_the_pipelines_maps(hsi_drive):
    methods = ("activation", "seg_gradcam", "hires")
    scales = segmentation_overlay_scales(MODEL, methods=methods, dataset=GeneratedDrives.from_split("1000", limit=1))
    # every method at both layers (the full-size float maps, not only what the node's pruned graph keeps)
    assert set(scales) == {"activation@dec1", "seg_gradcam@dec1", "hires@dec1", "seg_gradcam@bottleneck",
                           "hires@bottleneck"}
    gen = DriveGenerator(hsi_drive, seed=1000, render_cameras=False)
    pipeline = Pipeline(PipelineConfig(model=str(MODEL), backend="ort-cpu", precision="fp32", methods=methods,
                                       class_maps=True, overlay_scale="frame"), *gen.references())
    result = pipeline.process(gen.frame(0).raw)
    i = pipeline.card.input
    ids = result.labels[i.crop_top:i.crop_top + i.height, i.crop_left:i.crop_left + i.width]
    predicted = np.full(ids.shape, -1)
    for channel, label_id in enumerate(pipeline.card.label_ids()):  # the pipeline's label ids back to channels
        predicted[ids == label_id] = channel
    for key in ("activation@dec1", "hires@dec1", "seg_gradcam@dec1"):
        maps = result.class_maps[key]
        signed = scales[key]["signed"]
        for c, name in enumerate(c.name for c in pipeline.card.classes):
            region = predicted == c
            if not region.any():
                assert name not in scales[key]["classes"]
                continue
            v = np.abs(maps[c][region]) if signed else np.maximum(maps[c][region], 0)
            assert scales[key]["classes"][name] == pytest.approx(np.percentile(v, 99.0), rel=1e-5), (key, name)
            assert scales[key]["pixels"][name] == region.sum()
    assert scales["hires@dec1"]["dataset"].startswith("generated drives, split seeds 1000")


def test_a_model_without_a_1x1_head_is_calibrated_without_the_activation_map(tmp_path):
    """An imported segmentation_models_pytorch-style model (3x3 head): the CAMs only."""
    pytest.importorskip("torch", reason="the model is built and exported with torch")
    from test.model_import.test_import_segmentation import BANDS, SmpUNet, _export, _prepared
    from hsi_xai_node.model_import import ImportOptions, import_segmentation

    src = _export(_prepared(SmpUNet, 5, (1, BANDS, 64, 128)), tmp_path / "smp.onnx", (1, BANDS, 64, 128))
    r = import_segmentation(src, ImportOptions(classes="hsi-drive", self_check=False), log=lambda *a: None)
    scales = segmentation_overlay_scales(r.model, methods=("activation", "hires"), layers=("penultimate",),
                                         dataset=GeneratedDrives.from_split("1000", limit=1))
    assert list(scales) == [f"hires@{r.layers[0].tensor}"]


def test_a_datasets_unreadable_cubes_are_skipped_counted_and_named(tmp_path, hsi_drive, capsys):
    """calibrate-overlays --dataset on a download holding a wrong-band and a truncated cube beside a good one: the
    scales come from the good cube, and the card's entries and the command's output count the two skipped with the
    first reason (they had been skipped silently); with no readable cube it exits 2 with one line, the card
    unchanged."""
    import json
    import shutil

    from hsi_xai_node.cli import main
    from hsi_xai_node.sensor.frontend import FrontEnd, FrontEndConfig
    from test.test_evaluate import write_mmseg

    gen = DriveGenerator(hsi_drive, seed=2001, render_cameras=False)
    fe = FrontEnd(hsi_drive, *gen.references(), FrontEndConfig(normalise=False))
    root = write_mmseg(tmp_path / "HSIDrive20", [(fe.process(gen.frame(0).raw).cube.data, gen.frame(0).labels)],
                       split="validation")
    images = root / "images" / "validation"
    np.save(images / "z1_bands.npy", np.zeros((216, 409, 24), np.float32))
    (images / "z2_truncated.npy").write_bytes(b"\x93NUMPY\x01\x00")
    shutil.copy(MODEL, tmp_path / "m.onnx")
    shutil.copy(MODEL.with_suffix(".json"), tmp_path / "m.json")
    assert main(["calibrate-overlays", str(tmp_path / "m.onnx"), "--dataset", str(root)]) == 0
    out = capsys.readouterr().out
    card = json.loads((tmp_path / "m.json").read_text())
    for key, entry in card["overlay_scales"].items():
        assert entry["frames"] == 1, key
        bad = entry["skipped"]["unreadable or wrong-shaped file"]
        assert bad["count"] == 2 and "z1_bands.npy: cube (216, 409, 24) has no 25 bands" in bad["first"]
    assert "(1 frames of " in out and "; 2 skipped (unreadable or wrong-shaped file), first: " in out
    assert Pipeline(PipelineConfig(model=str(tmp_path / "m.onnx"), backend="ort-cpu")).scales.mode == "card"

    before = (tmp_path / "m.json").read_bytes()
    (images / "nf1111_101.npy").unlink()  # the good cube gone: nothing readable is left
    assert main(["calibrate-overlays", str(tmp_path / "m.onnx"), "--dataset", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no frame to calibrate on" in err[0] and "2 skipped (unreadable" in err[0], err
    assert (tmp_path / "m.json").read_bytes() == before

"""`hsi-xai reliability` on an imported model (mmsegmentation-style, HSI-Drive v2.0's 11 channels, a Resize behind
its head): the whole report runs, and its evaluation scores the classes the generated drives and the model share by
name. About 90 s on a 2-core machine, so it runs with HSI_XAI_HEAVY=1 (the pieces it needs have their own
tests in the suite: the import, the re-batched Resize, the ground truth by class name)."""

import json
import os

import pytest

from test.explain.harness import torch  # noqa: F401  (skips without torch)
from test.model_import.test_import_segmentation import BANDS, MMSegUNet, _export, _prepared

from hsi_xai_node.cli import main  # noqa: E402

pytestmark = pytest.mark.skipif(os.environ.get("HSI_XAI_HEAVY") != "1",
                                reason="heavy (about 90 s): set HSI_XAI_HEAVY=1 to run the reliability report on an "
                                       "imported model")


def test_the_reliability_report_runs_on_an_imported_model(tmp_path, capsys):
    src = _export(_prepared(MMSegUNet, 11, (1, BANDS, 208, 400)), tmp_path / "unet.onnx", (1, BANDS, 64, 128),
                  dynamic=True, opset=11)
    assert main(["import-model", str(src), "--classes", "hsi-drive-v2", "--input-size", "208x400",
                 "--normalise", "none", "--no-check"]) == 0
    out = tmp_path / "report"
    assert main(["reliability", "--quick", "--model", str(tmp_path / "unet_static.onnx"), "--detector", "",
                 "--frames", "1", "--rise-masks", "16", "--steps", "4", "--cascade-steps", "1",
                 "--input-methods", "gradient", "--sensitivity-draws", "1", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "unet_static"
    scored = set(report["evaluation"]["segmentation"]["frames"][0]["classes"])
    # by name: v2.0's sky is id 5 (4 in the drives), and the drives' 'other' is no v2.0 class
    assert scored and scored <= {"road", "road_marks", "vegetation", "sky"}

"""The bundled segmentation models: load against their card and sensor, small, and accurate.

The accuracy test runs the 25-band PN model on ONNX Runtime over the held-out test drives,
regenerated here from their seeds (no stored numbers are trusted).
"""

import numpy as np
import pytest

from hsi_xai_node.classes import SEGMENTATION_CLASSES
from hsi_xai_node.metrics import confusion, scores
from hsi_xai_node.model_card import load_model
from test.conftest import REPO

ort = pytest.importorskip("onnxruntime")
MODELS = REPO / "models"
BUNDLED = ["unet_bundled_1", "unet_bundled_3", "unet_bundled_25pn"]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_loads_and_is_small(name, hsi_drive):
    m = load_model(MODELS / f"{name}.onnx", profile=hsi_drive)
    assert (MODELS / f"{name}.onnx").stat().st_size <= 8 * 1024 * 1024
    assert [c.name for c in m.card.classes] == ["road", "road_marks", "vegetation", "sky", "other"]
    assert m.card.layers["penultimate"] == "dec1"
    expected_bands = {"unet_bundled_1": (731.88,), "unet_bundled_3": (770.58, 858.95, 944.49)}
    assert m.card.input.bands_nm == expected_bands.get(name, tuple(hsi_drive.band_wavelengths_nm))
    assert m.card.input.normalise == ("pn" if name.endswith("25pn") else "none")


def test_bundled_25pn_reaches_0_8_miou_on_held_out_drives(hsi_drive):
    from hsi_xai_node.training.data import DEFAULT_SPLITS, VARIANTS, generate  # torch-free

    m = load_model(MODELS / "unet_bundled_25pn.onnx", profile=hsi_drive)
    test = generate(hsi_drive, DEFAULT_SPLITS["test"])
    assert set(m.card.training["splits"]["test"]["seeds"]) == set(DEFAULT_SPLITS["test"].seeds)
    assert not set(m.card.training["splits"]["train"]["seeds"]) & set(DEFAULT_SPLITS["test"].seeds)
    sess = ort.InferenceSession(m.onnx_bytes, providers=["CPUExecutionProvider"])
    i = m.card.input
    x = VARIANTS["25pn"].transform(test.reflectance, test.wavelengths_nm)  # PN x 25, as the card says
    assert i.scale == 25.0 and i.normalise == "pn"
    lut = m.card.label_ids()
    cm = 0
    for k in range(len(test)):
        logits, = sess.run([m.card.logits], {i.tensor: m.card.model_input(x[k] / np.float32(i.scale))})
        pred = lut[logits[0].argmax(0)]
        truth = test.labels[k, i.crop_top:i.crop_top + i.height, i.crop_left:i.crop_left + i.width]
        cm = cm + confusion(truth, pred, len(SEGMENTATION_CLASSES))
    result = scores(cm, {c.id: c.name for c in SEGMENTATION_CLASSES if c.id})
    assert result["miou"] >= 0.8, result
    # the card's figure was measured by PyTorch on the same drives
    assert result["miou"] == pytest.approx(m.card.metrics["test_generated"]["all"]["miou"], abs=0.01)

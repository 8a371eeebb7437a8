"""Conservativeness table (paper 000): maps equal to logits minus bias are conservative, others are not."""

import numpy as np
import onnx
import pytest

from hsi_xai_node.explain import SegmentationExplainConfig, build_segmentation_explainer
from hsi_xai_node.reliability import conservativeness_table, residual_maps
from test.reliability.conftest import run_all

K, H, W = 3, 12, 16


def frame(seed, absent=None):
    """(1, K, H, W) logits (class `absent` never wins), the head bias and (K, 1, H, W) logit-minus-bias maps."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (1, K, H, W))
    if absent is not None:
        z[0, absent] -= 100
    bias = np.array([0.5, -1.0, 2.0])
    return z, bias, (z[0] - bias[:, None, None])[:, None]


def test_logits_minus_bias_conservative_doubled_not():
    frames = []
    for seed in range(3):
        z, bias, exact = frame(seed, absent=2 if seed == 1 else None)
        frames.append({"logits": z, "exact": exact, "doubled": 2 * exact, "float32": exact.astype(np.float32)})
    table = conservativeness_table(frames, logits="logits", maps={"exact": "exact", "doubled": "doubled",
                                                                  "float32": "float32"},
                                   bias=bias, class_names=["a", "b", "c"])
    assert table["exact"]["conservative"] and table["exact"]["max"] < 1e-12
    assert table["float32"]["conservative"] and table["float32"]["max"] < 1e-5
    assert table["doubled"]["conservative"] is False
    # the doubled map misses by the target itself: |2T - T| / |sum_R logit|, with T = sum_R logit - bias |R|
    res = []
    for f in frames:
        z = f["logits"][0]
        region = z.argmax(0) == np.arange(K)[:, None, None]
        s = (z * region).sum((1, 2))
        t = s - bias * region.sum((1, 2))
        present = region.any((1, 2))
        res.append(np.where(present, np.abs(t) / np.where(present, np.abs(s), 1.0), np.nan))
    res = np.array(res)
    for c, name in enumerate("abc"):
        v = res[:, c][np.isfinite(res[:, c])]
        row = table["doubled"]["classes"][name]
        assert row["frames"] == v.size and row["max"] == pytest.approx(v.max()) and row["median"] == pytest.approx(np.median(v))
    assert table["doubled"]["classes"]["c"]["frames"] == 2  # absent from frame 1
    assert table["doubled"]["max"] == pytest.approx(np.nanmax(res))


def test_given_regions_and_a_class_never_present():
    z, bias, exact = frame(0)
    region = np.zeros((K, 1, H, W))
    region[0, 0, :4] = 1  # an ROI seed: class 0's top rows, nothing for the others
    table = conservativeness_table([{"z": z, "m": exact}], logits="z", maps={"m": "m"}, bias=bias, regions=[region])
    assert table["m"]["conservative"] and table["m"]["classes"]["0"]["frames"] == 1
    assert table["m"]["classes"]["1"]["conservative"] is None and np.isnan(table["m"]["classes"]["1"]["max"])
    with pytest.raises(ValueError, match="logits and maps"):
        conservativeness_table([{"z": z}])


def test_bundled_unet_activation_conservative_seg_gradcam_not(bundled_frame):
    loaded, x = bundled_frame
    card = loaded.card
    model = onnx.load_model_from_string(loaded.onnx_bytes)
    eg = build_segmentation_explainer(model, card.input.tensor, card.logits, card.layers,
                                      SegmentationExplainConfig(methods=("activation", "seg_gradcam", "hires"),
                                                                layers=("penultimate", "dec2"), top_k=0,
                                                                second_block=False))
    labels = residual_maps(eg)
    # maps at the logits' resolution only: dec2 is at half resolution, and resized or uint8 copies never count
    assert sorted(labels) == ["activation@dec1", "hires@dec1", "seg_gradcam@dec1"]
    out = run_all(eg.model, {card.input.tensor: x})
    table = conservativeness_table([out], eg, class_names=[c.name for c in card.classes])
    assert table["activation@dec1"]["conservative"] is True
    assert table["activation@dec1"]["max"] < 1e-4
    assert table["seg_gradcam@dec1"]["conservative"] is False
    assert table["seg_gradcam@dec1"]["median"] > 0.1  # not rounding: Seg-Grad-CAM scales by the region's share
    # HiResCAM at the head's input is region * (logit - bias): conservative there too
    assert table["hires@dec1"]["conservative"] is True
    present = sum(row["frames"] for row in table["activation@dec1"]["classes"].values())
    assert present >= 4

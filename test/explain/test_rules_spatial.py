"""Resize and Pad rules against torch autograd (float64)."""

import numpy as np
import pytest
import torch.nn.functional as F

from hsi_xai_node.explain import ExplainError
from test.explain.harness import check_backward, node_model, random, torch, seeded_gradients

X = random((1, 3, 7, 9), 1)


def resize_model(x, sizes=None, scales=None, opset=17, **attrs):
    consts = {"sizes": np.array(sizes, np.int64)} if sizes is not None else {"scales": np.array(scales, np.float32)}
    order = ["x", "", "", "sizes"] if sizes is not None else ["x", "", "scales"]
    return node_model("Resize", {"x": x}, consts, input_order=order, opset=opset, **attrs)


@pytest.mark.parametrize("out", [(14, 18), (10, 13), (4, 5), (7, 18)])
@pytest.mark.parametrize("transform", ["half_pixel", "pytorch_half_pixel", "align_corners"])
def test_resize_linear_sizes(out, transform):
    m = resize_model(X, sizes=[1, 3, *out], mode="linear", coordinate_transformation_mode=transform)
    corners = transform == "align_corners"
    check_backward(m, lambda x: F.interpolate(x, size=out, mode="bilinear", align_corners=corners), {"x": X}, ["x"])


@pytest.mark.parametrize("scale", [2.0, 1.5, 0.6])
def test_resize_scales_non_integer(scale):
    m = resize_model(X, scales=[1, 1, scale, scale], mode="linear")
    check_backward(m, lambda x: F.interpolate(x, scale_factor=scale, mode="bilinear"), {"x": X}, ["x"])
    m = resize_model(X, scales=[1, 1, scale, scale], mode="nearest", coordinate_transformation_mode="asymmetric",
                     nearest_mode="floor")
    check_backward(m, lambda x: F.interpolate(x, scale_factor=scale, mode="nearest"), {"x": X}, ["x"])


@pytest.mark.parametrize("out", [(14, 18), (21, 9), (10, 13), (4, 5)])  # integer ones take the block-sum path
def test_resize_nearest_matches_torch(out):
    m = resize_model(X, sizes=[1, 3, *out], mode="nearest", coordinate_transformation_mode="asymmetric",
                     nearest_mode="floor")
    check_backward(m, lambda x: F.interpolate(x, size=out, mode="nearest"), {"x": X}, ["x"])
    m = resize_model(X, sizes=[1, 3, *out], mode="nearest", nearest_mode="round_prefer_ceil")
    check_backward(m, lambda x: F.interpolate(x, size=out, mode="nearest-exact"), {"x": X}, ["x"])


def _source(transform, n_in, n_out):
    """Source coordinate of each output index, written out independently of the rule."""
    i, s = np.arange(n_out, dtype=np.float64), n_out / n_in
    return {"half_pixel": (i + 0.5) / s - 0.5, "asymmetric": i / s,
            "pytorch_half_pixel": (i + 0.5) / s - 0.5 if n_out > 1 else 0 * i,
            "align_corners": i * (n_in - 1) / max(n_out - 1, 1)}[transform]


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
@pytest.mark.parametrize("transform", ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"])
def test_resize_nearest_modes(transform, nearest_mode):
    """Every nearest mode against a torch gather; the harness checks that gather against ONNX Runtime's forward."""
    out = (12, 5)
    rounding = {"round_prefer_floor": lambda v: np.ceil(v - 0.5), "round_prefer_ceil": lambda v: np.floor(v + 0.5),
                "floor": np.floor, "ceil": np.ceil}[nearest_mode]
    rows, cols = [torch.tensor(np.clip(rounding(_source(transform, n, o)), 0, n - 1).astype(np.int64))
                  for n, o in zip(X.shape[2:], out)]
    m = resize_model(X, sizes=[1, 3, *out], mode="nearest", coordinate_transformation_mode=transform,
                     nearest_mode=nearest_mode)
    check_backward(m, lambda x: x[:, :, rows][:, :, :, cols], {"x": X}, ["x"])


def test_resize_linear_asymmetric_and_1d_and_axes():
    out = (11, 4)

    def lerp(x, axis, n_out):
        src = np.clip(_source("asymmetric", x.shape[axis], n_out), 0, x.shape[axis] - 1)
        lo = np.floor(src).astype(np.int64)
        hi, w = np.minimum(lo + 1, x.shape[axis] - 1), torch.tensor(src - lo).reshape([-1] + [1] * (3 - axis))
        return x.index_select(axis, torch.tensor(lo)) * (1 - w) + x.index_select(axis, torch.tensor(hi)) * w

    m = resize_model(X, sizes=[1, 3, *out], mode="linear", coordinate_transformation_mode="asymmetric")
    check_backward(m, lambda x: lerp(lerp(x, 2, out[0]), 3, out[1]), {"x": X}, ["x"])
    x1 = random((1, 2, 6), 2)
    m = resize_model(x1, sizes=[1, 2, 13], mode="linear")
    check_backward(m, lambda x: F.interpolate(x, size=13, mode="linear"), {"x": x1}, ["x"])
    m = resize_model(X, scales=[2.0, 3.0], opset=18, mode="nearest", axes=[2, 3])
    check_backward(m, lambda x: F.interpolate(x, scale_factor=(2, 3), mode="nearest"), {"x": X}, ["x"])


@pytest.mark.parametrize("pads", [(1, 2, 0, 3), (-1, 0, 2, -2), (-2, -1, -1, -3)])
def test_pad_constant_including_crops(pads):
    top, left, bottom, right = pads
    m = node_model("Pad", {"x": X}, {"pads": np.array([0, 0, top, left, 0, 0, bottom, right], np.int64),
                                     "v": np.array(0.5, np.float32)})
    check_backward(m, lambda x: F.pad(x, (left, right, top, bottom), value=0.5), {"x": X}, ["x"])


def test_pad_channels_and_axes_input():
    m = node_model("Pad", {"x": X}, {"pads": np.array([0, 2, 0, -1, 0, 0, 1, 3], np.int64)})
    check_backward(m, lambda x: F.pad(x, (-1, 3, 0, 1, 2, 0)), {"x": X}, ["x"])
    m = node_model("Pad", {"x": X}, {"pads": np.array([1, -2, 0, 2], np.int64), "axes": np.array([-1, 2], np.int64)},
                   input_order=["x", "pads", "", "axes"], opset=18)
    check_backward(m, lambda x: F.pad(x, (1, 0, -2, 2)), {"x": X}, ["x"])


def test_clear_failures():
    with pytest.raises(ExplainError, match="mode 'cubic' is not supported"):
        seeded_gradients(resize_model(X, scales=[1, 1, 2, 2], mode="cubic"))
    with pytest.raises(ExplainError, match="resizing the batch or channel axis is not supported"):
        seeded_gradients(resize_model(X, sizes=[1, 6, 14, 18], mode="linear"))
    with pytest.raises(ExplainError, match="coordinate_transformation_mode 'tf_crop_and_resize' is not supported"):
        seeded_gradients(resize_model(X, scales=[1, 1, 2, 2], mode="linear", coordinate_transformation_mode="tf_crop_and_resize"))
    for mode in ("reflect", "edge"):
        with pytest.raises(ExplainError, match=f"mode '{mode}' is not supported"):
            seeded_gradients(node_model("Pad", {"x": X}, {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, mode=mode))
    with pytest.raises(ExplainError, match="padding the batch axis is not supported"):
        seeded_gradients(node_model("Pad", {"x": X}, {"pads": np.array([1, 0, 0, 0, 0, 0, 0, 0], np.int64)}))


def test_backward_graphs_pass_the_tensorrt_check():
    from hsi_xai_node.explain._trt_check import check_tensorrt
    for m in (resize_model(X, sizes=[1, 3, 10, 13], mode="linear"), resize_model(X, scales=[1, 1, 2, 2]),
              node_model("Pad", {"x": X}, {"pads": np.array([0, 0, -1, 2, 0, 0, 1, -2], np.int64)})):
        assert check_tensorrt(seeded_gradients(m)[0]) == []

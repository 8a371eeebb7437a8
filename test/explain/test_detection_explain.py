"""Per-box Grad-CAM on a detector head (depthwise-separable convs, SiLU, overlapping max-pool,
residual Add, sigmoid scores) vs PyTorch autograd in float64."""

import warnings

import numpy as np
import onnx
import pytest

from hsi_xai_node.explain import (DetectionExplainConfig, ExplainError, assert_tensorrt_compatible,
                                  build_detection_explainer)
from test.explain.harness import relative_error, session, torch

nn, F = torch.nn, torch.nn.functional
ANCHORS, CLASSES = 3, 4


class Head(nn.Module):
    def __init__(self, cin=6, c=8):
        super().__init__()
        self.stem = nn.Conv2d(cin, c, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)  # overlapping windows
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)  # depthwise
        self.pw = nn.Conv2d(c, c, 1)  # pointwise
        self.cls = nn.Conv2d(c, ANCHORS * CLASSES, 3, padding=1)
        self.feat = None

    def forward(self, x):
        y = self.pool(F.silu(self.stem(x)))
        self.feat = y + F.silu(self.pw(self.dw(y)))  # residual; the class-head input
        s = self.cls(self.feat).permute(0, 2, 3, 1).reshape(1, -1, CLASSES)
        return torch.sigmoid(s)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    torch.manual_seed(3)
    model = Head().eval()
    path = tmp_path_factory.mktemp("det") / "head.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 6, 20, 28),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["scores"])
    m = onnx.load(str(path))
    ops = [n.op_type for n in m.graph.node]
    assert {"MaxPool", "Sigmoid", "Mul", "Add", "Transpose", "Reshape"} <= set(ops)
    add = next(n for n in m.graph.node if n.op_type == "Add")  # the residual
    for n in m.graph.node:
        n.input[:] = ["class_in" if t == add.output[0] else t for t in n.input]
    add.output[0] = "class_in"
    x = np.random.default_rng(4).standard_normal((1, 6, 20, 28)).astype(np.float32)
    return model.double(), m, x


@pytest.mark.parametrize("k", [1, 5])
def test_per_box_gradcam_matches_autograd(head, k):
    model, m, x = head
    eg = build_detection_explainer(m, "input", "scores", {"class_head_input": "class_in"},
                                   DetectionExplainConfig(layers=("class_head_input",), top_k=k))
    assert_tensorrt_compatible(eg.model, "detector explain graph")
    sess = session(eg.model)
    names = eg.output_names()
    out = dict(zip(names, sess.run(names, {"input": x})))
    by_method = {o.method: out[n] for n, o in eg.outputs.items()}
    idx = by_method["topk_index"][0]
    x64 = torch.tensor(x, dtype=torch.float64)
    scores = model(x64)
    flat = scores.reshape(-1)
    np.testing.assert_allclose(by_method["topk_scores"][0], flat[idx].detach().numpy(), rtol=1e-5)
    assert (np.diff(by_method["topk_scores"][0]) <= 0).all()
    feat = model.feat
    signed, relu = [], []
    for i in idx:
        g = torch.autograd.grad(flat[i], feat, retain_graph=True)[0][0].numpy()
        a = feat[0].detach().numpy()
        cam = (g.mean(axis=(1, 2), keepdims=True) * a).sum(0, keepdims=True)
        signed.append(cam)
        relu.append(np.maximum(cam, 0))
    assert relative_error(by_method["box_gradcam_signed"], np.stack(signed)) < 1e-5
    assert relative_error(by_method["box_gradcam"], np.stack(relu)) < 1e-5
    assert by_method["box_gradcam_u8"].shape == (k, 1, 20, 28)  # resized to the input


def test_bad_detection_requests(head):
    _, m, _ = head
    with pytest.raises(ExplainError, match="top_k must be in 1..1680"):
        build_detection_explainer(m, "input", "scores", {}, DetectionExplainConfig(layers=("class_in",), top_k=0))
    with pytest.raises(ExplainError, match=r"must be \(1, anchors, classes\)"):
        build_detection_explainer(m, "input", "input", {}, DetectionExplainConfig(layers=("class_in",)))

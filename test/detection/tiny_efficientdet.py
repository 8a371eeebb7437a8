"""A tiny EfficientDet shared by the detector tests (training, explain, card): seconds to build,
export and run on a 64x96 input.

Its weights are random (torch.manual_seed, He-initialised convs) and so are its BN statistics and affine terms (so BN
folding at export is exercised), its BiFPN fusion weights (so the normalised fusion is not a
plain mean) and its class-logit biases (so the scores spread around 0.5 instead of sitting at
the 0.01 focal-loss prior, and NMS keeps many boxes at a moderate threshold).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

torch = pytest.importorskip("torch", reason="torch is the reference here: pip install -e '.[test]'")
ort = pytest.importorskip("onnxruntime")

from hsi_xai_node.detection.anchors import AnchorConfig  # noqa: E402
from hsi_xai_node.training.efficientdet import EfficientDet, EfficientDetConfig, FastFusion  # noqa: E402

HW = (64, 96)  # P2..P5: 16x24, 8x12, 4x6, 2x3
TINY = EfficientDetConfig(in_channels=3, num_classes=3, stem=8,
                          stages=((1, 8, 1, 1, 3), (2, 8, 1, 2, 3), (2, 12, 1, 2, 5), (2, 16, 1, 2, 3), (2, 16, 1, 2, 3)),
                          fpn_channels=16, fpn_layers=2, head_layers=1, anchors=AnchorConfig(sizes=(6.0, 12.0, 24.0, 48.0)))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Import this into a test module to run its torch code on one thread: on a busy machine,
    torch's default two threads make each forward of this tiny net ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, config: EfficientDetConfig = TINY) -> EfficientDet:
    torch.manual_seed(seed)
    model = EfficientDet(config)
    g = torch.Generator().manual_seed(seed + 1000)
    predict = model.class_net.predict[1]
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m is not predict:
                # He init: PyTorch's default conv init shrinks the signal ~3x per layer, and through
                # this many layers the features would be near-constant (many equal scores)
                torch.nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            elif isinstance(m, FastFusion):
                m.weights.copy_(torch.rand(len(m.weights), generator=g) * 1.5 + 0.2)
        predict.bias.copy_(torch.randn(predict.bias.shape, generator=g) * 0.5)
        predict.weight.mul_(0.25)  # scores from ~0.05 to ~0.95, not saturated
    return model.eval()


def image(seed: int = 0, hw=HW, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, channels, *hw)).astype(np.float32)


def run(model, feeds: dict, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """ONNX Runtime CPU outputs by name (all graph outputs unless `names`)."""
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = names or [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(names, feeds)))


def with_score_threshold(model: onnx.ModelProto, threshold: float) -> onnx.ModelProto:
    """A copy of an exported detector whose in-graph NMS keeps scores > `threshold` (no re-export)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nms = next(n for n in out.graph.node if n.op_type == "NonMaxSuppression")
    init = next(t for t in out.graph.initializer if t.name == nms.input[4])
    init.CopyFrom(numpy_helper.from_array(np.array(threshold, np.float32), init.name))
    return out

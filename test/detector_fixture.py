"""A tiny random-weight multispectral EfficientDet (RGB + MIR, 256x320) with its detector card, for tests.

    path = write_tiny_detector(tmp_dir)      # tmp_dir/tiny_det_rgb_mir.onnx + .json (the card)

Exported with the real training export (`training.detection.write_model`: anchor decoding and
NMS in the graph, the bundled detector's card layout) but untrained, and with an in-graph
score threshold of 0.005, so every frame has detections. Batch-norm statistics are set
from noise and the class head's last layer scaled up, so scores and classes vary between
boxes and frames rather than all sitting at the focal-loss prior of 0.01. Needs torch
(the `[train]` extra).
"""

from __future__ import annotations

from pathlib import Path

NAME = "tiny_det_rgb_mir"


def write_tiny_detector(out_dir: Path, seed: int = 0) -> Path:
    import torch

    from hsi_xai_node.detection.anchors import AnchorConfig
    from hsi_xai_node.detection.postprocess import PostprocessConfig
    from hsi_xai_node.training.detection import DetectionResult, write_model
    from hsi_xai_node.training.efficientdet import EfficientDet, EfficientDetConfig

    torch.manual_seed(seed)
    config = EfficientDetConfig(
        in_channels=4, stem=8,
        stages=((1, 8, 1, 1, 3), (2, 8, 1, 2, 3), (2, 16, 1, 2, 3), (2, 16, 1, 2, 3), (2, 16, 1, 2, 3)),
        fpn_channels=16, fpn_layers=1, head_layers=1,
        anchors=AnchorConfig(sizes=(6.0, 12.0, 24.0, 48.0), scales=(1.0,), ratios=(0.5, 2.0)))
    model = EfficientDet(config)
    # Batch-norm statistics from one noise batch, so features keep their scale through the random
    # layers (with the initial identity statistics they shrink ~10x per level and every score sits
    # at the prior); then a 4x larger class head: logits spread about +-1 around the prior.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 4, 256, 320, generator=torch.Generator().manual_seed(seed)))
        model.class_net.predict[1].weight.mul_(4.0)
    model.eval()
    result = DetectionResult(model, "rgb+mir", 0.0, 0, 0.0, [])
    path, _ = write_model(result, Path(out_dir), NAME, {}, {"data": "none: random weights (a test fixture)"},
                          PostprocessConfig(score_threshold=0.005, iou_threshold=0.5, max_detections=20))
    return path

"""Whole-model check on the bundled 25-band U-Net: every class, several target layers, on a real
generated frame, against autograd through an independent float64 PyTorch evaluation of the graph
(on the branches the float32 engine took: see torch_onnx.py)."""

import numpy as np
import onnx
import pytest

from hsi_xai_node.explain import (SegmentationExplainConfig, assert_tensorrt_compatible, build_segmentation_explainer,
                                  conservativeness_residual)
from test.conftest import bundled_unet_input
from test.explain.harness import relative_error, session, torch
from test.explain.test_cams import ref_eigencam, ref_gradcam_pp, ref_layercam, ref_xgradcam, ref_xres
from test.explain.torch_onnx import branch_inputs, run



@pytest.fixture(scope="module")
def frame_input(hsi_drive):
    return bundled_unet_input(hsi_drive)


def test_all_classes_several_layers_match_autograd(frame_input):
    loaded, x = frame_input
    card = loaded.card
    model = onnx.load_model_from_string(loaded.onnx_bytes)
    layers = ("dec1", "dec2", "bottleneck", "enc2")
    eg = build_segmentation_explainer(model, card.input.tensor, card.logits, card.layers,
                                      SegmentationExplainConfig(methods=("activation", "seg_gradcam_signed", "hires",
                                                                         "gradcam_pp", "xgradcam", "layercam",
                                                                         "seg_xres", "eigencam"),
                                                                layers=layers, upsample=False, uint8=False))
    assert_tensorrt_compatible(eg.model, "bundled U-Net explain graph")
    names = eg.output_names()
    out = dict(zip(names, session(eg.model).run(names, {card.input.tensor: x})))
    logits = out[card.logits]
    region = (logits.argmax(1)[None] == np.arange(5).reshape(5, 1, 1, 1))
    assert region.reshape(5, -1).any(1).sum() >= 4  # a real frame: most classes present

    # the float32 forward's max-pool winners and ReLU signs, so the reference takes the engine's branches
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    decide = branch_inputs(model)
    for t in decide:
        probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    branches = dict(zip(decide, session(probe).run(decide, {card.input.tensor: x})))
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)  # so autograd tracks the graph
    env = run(model, {card.input.tensor: xt}, [card.logits, *layers], branches)
    assert relative_error(logits, env[card.logits].detach().numpy()) < 1e-5
    for c in range(5):
        if not region[c].any():
            continue
        score = (env[card.logits][0, c] * torch.tensor(region[c, 0], dtype=torch.float64)).sum()
        grads = torch.autograd.grad(score, [env[layer] for layer in layers], retain_graph=True)
        for layer, g in zip(layers, grads):
            g, a = g[0].numpy(), env[layer][0].detach().numpy()
            ours = {o.method: out[n] for n, o in eg.outputs.items() if o.layer == layer}
            assert relative_error(ours["hires"][c, 0], (g * a).sum(0)) < 1e-5, (c, layer)
            assert relative_error(ours["seg_gradcam_signed"][c, 0],
                                  (g.mean(axis=(1, 2), keepdims=True) * a).sum(0)) < 1e-5, (c, layer)
            for method, formula in (("gradcam_pp", ref_gradcam_pp), ("xgradcam", ref_xgradcam),
                                    ("layercam", ref_layercam), ("seg_xres", ref_xres)):
                assert relative_error(ours[method][c, 0], formula(g, a)) < 1e-5, (method, c, layer)
    for layer in layers:  # EigenCAM against the SVD (same sign rule), one map for all classes
        eigen = next(out[n] for n, o in eg.outputs.items() if o.method == "eigencam" and o.layer == layer)
        want, _ = ref_eigencam(env[layer][0].detach().numpy())
        assert relative_error(eigen[0, 0], want) < 1e-5, layer  # measured 1.5e-7 .. 6.6e-7
    act = next(out[n] for n, o in eg.outputs.items() if o.method == "activation")
    assert np.nanmax(conservativeness_residual(act, logits, region, eg.head_bias)) < 1e-5

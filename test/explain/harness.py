"""Checking backward rules against PyTorch autograd in float64.

`check_backward` builds nothing itself: give it an ONNX model whose graph inputs include
the target, plus a torch function computing the same forward. It appends a seed input
(batch rows of random cotangents), runs the backward graph on ONNX Runtime CPU with
ORT_ENABLE_EXTENDED, and compares every row with torch.autograd.grad in float64 on the
same (float32-rounded) inputs and weights. Relative error = max |ours - ref| / max |ref|.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch", reason="PyTorch autograd is the reference: pip install -e '.[test]'")
ort = pytest.importorskip("onnxruntime")

from hsi_xai_node.explain import gradients  # noqa: E402

OPSET = 17


def make_model(graph, opset: int = OPSET) -> onnx.ModelProto:
    """IR version 8 (opset 17's): onnx 1.23 writes 14 by default, newer than ONNX Runtime 1.31 reads."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return onnx.shape_inference.infer_shapes(model)  # fills the outputs' shapes


def node_model(op_type: str, inputs: dict[str, np.ndarray], consts: dict[str, np.ndarray] | None = None,
               input_order: list[str] | None = None, n_outputs: int = 1, opset: int = OPSET, **attrs) -> onnx.ModelProto:
    """A one-node model: `inputs` become graph inputs, `consts` initializers, outputs y0.. (y if one)."""
    consts = consts or {}
    order = input_order or [*inputs, *consts]
    outs = ["y"] if n_outputs == 1 else [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, order, outs, name=f"{op_type.lower()}_under_test", **attrs)
    graph = helper.make_graph(
        [node], "rule_test",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return make_model(graph, opset)


def session(model: onnx.ModelProto):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    scale = np.abs(ref).max()
    return float(np.abs(ours - ref).max() / scale) if scale > 0 else float(np.abs(ours).max())


def check_backward(model: onnx.ModelProto, torch_fn, feeds: dict[str, np.ndarray], targets: list[str],
                   output: str = "y", batch: int = 3, rtol: float = 1e-5, seed: int = 0,
                   seed_values: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Assert the ONNX backward equals torch autograd; return our gradients by target."""
    feeds = {k: np.asarray(v, np.float32) for k, v in feeds.items()}
    out_shape = [d.dim_value for d in next(o for o in model.graph.output if o.name == output).type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    cot = seed_values if seed_values is not None else rng.standard_normal([batch] + out_shape[1:]).astype(np.float32)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.input.append(helper.make_tensor_value_info("seed", TensorProto.FLOAT, list(cot.shape)))
    m, grads = gradients(m, {output: "seed"}, targets, batch=cot.shape[0])
    onnx.checker.check_model(m, full_check=True)
    sess = session(m)
    names = [output] + [grads[t] for t in targets]
    got = dict(zip(names, sess.run(names, {**feeds, "seed": cot})))

    tx = {k: torch.tensor(v, dtype=torch.float64, requires_grad=k in targets) for k, v in feeds.items()}
    y = torch_fn(**tx)
    np.testing.assert_allclose(got[output], y.detach().numpy(), rtol=1e-4, atol=1e-5,
                               err_msg="the torch reference does not compute the same forward as the ONNX op")
    result = {}
    for t in targets:
        ref = np.stack([torch.autograd.grad(y, tx[t], torch.tensor(cot[r:r + 1], dtype=torch.float64),
                                            retain_graph=True)[0][0].numpy() for r in range(cot.shape[0])])
        ours = got[grads[t]]
        assert ours.shape == ref.shape, (ours.shape, ref.shape)
        err = relative_error(ours, ref)
        assert err <= rtol, f"gradient w.r.t. {t}: relative error {err:.2e} > {rtol:.0e}"
        result[t] = ours
    return result


def seeded_gradients(model: onnx.ModelProto, target: str = "x", batch: int = 2):
    """Add a `seed` input for the first output and append the backward pass (for failure tests)."""
    out = model.graph.output[0]
    shape = [batch] + [d.dim_value for d in out.type.tensor_type.shape.dim][1:]
    model.graph.input.append(helper.make_tensor_value_info("seed", TensorProto.FLOAT, shape))
    return gradients(model, {out.name: "seed"}, [target], batch=batch)


def random(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)

"""A thin builder over an ONNX model: static shapes, constants, fresh names, new nodes.

Every graph this package emits is built through `Builder`, so names never collide and
every emitted op is a standard-domain op at the model's own opset.
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import numpy as np
import onnx
from onnx import NodeProto, helper, numpy_helper, shape_inference

from ..errors import InputError

# Every node and tensor the builders add is named NODE_PREFIX + ...: a profile, a test that wants none of them, or a
# TensorRT build that keeps the explanations in float32 (runtime/tensorrt_backend.py) finds them by it.
NODE_PREFIX = "xai/"


class ExplainError(InputError):
    """The explain graph cannot be built: unsupported op, unknown tensor, bad option."""


MIN_OPSET = 13  # axes/splits/pads as inputs everywhere we emit them


class Builder:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        if self.opset < MIN_OPSET:
            raise ExplainError(f"model opset {self.opset} is older than {MIN_OPSET}: re-export it with opset >= 17")
        inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        self._types = {}
        for v in itertools.chain(inferred.graph.input, inferred.graph.value_info, inferred.graph.output):
            self._types[v.name] = v.type.tensor_type
        self._consts = {t.name: t for t in self.graph.initializer}
        for n in self.graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self._consts[n.output[0]] = n.attribute[0].t
            elif n.op_type == "Identity" and n.input[0] in self._consts:
                # exporters alias a weight shared by several layers through Identity nodes
                self._consts[n.output[0]] = self._consts[n.input[0]]
        self._names = {t.name for t in self.graph.initializer} | {v.name for v in self.graph.input}
        self._names |= {o for n in self.graph.node for o in n.output} | {n.name for n in self.graph.node}
        self._counter = itertools.count()
        self._scope = ""
        self._producers: dict[str, NodeProto] = {}  # tensor -> the node making it, for graph.node[:self._indexed]
        self._indexed = 0
        self._pixels: dict[str, str] = {}  # 4-D tensor -> its (H * W, C) channels-last view, where one was made

    # --- facts about forward tensors -------------------------------------------------------
    def shape(self, tensor: str) -> tuple[int, ...]:
        if tensor in self._consts:
            return tuple(self._consts[tensor].dims)
        t = self._types.get(tensor)
        if t is None or not t.HasField("shape"):
            raise ExplainError(f"no static shape known for tensor {tensor!r} (graphs must have static shapes)")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        if any(d < 0 for d in dims):
            raise ExplainError(f"tensor {tensor!r} has a dynamic shape {dims}: export the model at a fixed shape")
        return dims

    def known_shape(self, tensor: str) -> tuple[int, ...] | None:
        """The static shape of a forward tensor or constant; None for a tensor whose shape was not inferred or
        declared (most tensors the explain graph adds)."""
        try:
            return self.shape(tensor)
        except ExplainError:
            return None

    def copy_type(self, tensor: str, to: str) -> None:
        """`to` (a new tensor) has `tensor`'s element type and shape: a copy of the forward computes it."""
        if tensor in self._types:
            self._types[to] = self._types[tensor]

    def declare(self, tensor: str, shape, elem_type=onnx.TensorProto.FLOAT) -> None:
        """`tensor` (a new tensor) has this static shape: a copy of forward nodes run on other shapes (windows)."""
        self._types[tensor] = helper.make_tensor_type_proto(elem_type, list(shape)).tensor_type

    def constant(self, tensor: str) -> np.ndarray | None:
        """The value of an initializer or Constant output, else None."""
        t = self._consts.get(tensor)
        return None if t is None else numpy_helper.to_array(t)

    def producer(self, tensor: str) -> NodeProto | None:
        """The node whose output `tensor` is (None for a graph input or initializer). Nodes are only appended while
        a graph is built: the ones appended since the last call are indexed, not the whole graph scanned again."""
        if self._indexed > len(self.graph.node):  # the nodes were replaced by fewer (a pruned graph): start again
            self._producers, self._indexed = {}, 0
        if tensor not in self._producers and self._indexed < len(self.graph.node):
            for node in self.graph.node[self._indexed:]:
                for o in node.output:
                    self._producers[o] = node
            self._indexed = len(self.graph.node)
        return self._producers.get(tensor)

    def factors(self, tensor: str) -> tuple[str, str] | None:
        """The two inputs of the Mul that makes `tensor`, else None: the rules that take a product apart (LRP's
        relevance arrives as a layer's backward times its input) read it through this."""
        node = self.producer(tensor)
        return (node.input[0], node.input[1]) if node is not None and node.op_type == "Mul" and \
            len(node.input) == 2 else None

    def require_constant(self, tensor: str, node, what: str) -> np.ndarray:
        value = self.constant(tensor) if tensor else None
        if value is None:
            raise ExplainError(f"{node.op_type} node {node.name!r}: {what} ({tensor!r}) must be a constant "
                               "for the backward pass")
        return value

    # --- emitting ---------------------------------------------------------------------------
    @contextmanager
    def scope(self, name: str):
        """Name what is emitted inside as xai/<name>/...: the backward pass's nodes say what they are, so a
        profile, or a test that wants none of them, can find them."""
        outer, self._scope = self._scope, f"{self._scope}{name}/"
        try:
            yield
        finally:
            self._scope = outer

    def fresh(self, hint: str) -> str:
        while True:
            name = f"{NODE_PREFIX}{self._scope}{hint}_{next(self._counter)}"
            if name not in self._names:
                self._names.add(name)
                return name

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        array = np.asarray(value, dtype=dtype)
        name = self.fresh(hint)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        self._consts[name] = self.graph.initializer[-1]
        return name

    def ints(self, values, hint: str = "ints") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint, np.int64)

    def op(self, op_type: str, inputs, hint: str | None = None, outputs: int = 1, **attrs):
        """Append a node; returns its output name (or list of names when outputs > 1)."""
        hint = hint or op_type.lower()
        out = [self.fresh(f"{hint}_out{i}" if outputs > 1 else hint) for i in range(outputs)]
        self.graph.node.append(helper.make_node(op_type, list(inputs), out, name=self.fresh(f"{hint}_node"),
                                                **attrs))
        return out if outputs > 1 else out[0]

    def add_all(self, parts: list[str], hint: str = "add") -> str:
        """The sum of `parts` as a chain of Adds: ONNX Runtime's CPU Sum takes about twice as long (two inputs of
        10 x 64 x 64 x 80: 1.6 ms against 0.84; four: 5.3 against 2.5 for three Adds)."""
        total = parts[0]
        for part in parts[1:]:
            total = self.op("Add", [total, part], hint)
        return total

    def reduce(self, op_type: str, x: str, axes, keepdims: int = 1, hint: str | None = None) -> str:
        """ReduceSum/ReduceMean/ReduceMax over `axes`, axes as attribute or input as the opset wants."""
        axes = [int(a) for a in axes]
        takes_input = op_type == "ReduceSum" or self.opset >= 18
        if takes_input:
            return self.op(op_type, [x, self.ints(axes, "axes")], hint, keepdims=keepdims)
        return self.op(op_type, [x], hint, axes=axes, keepdims=keepdims)

    def copy_node(self, node, mapping: dict[str, str], tag: str, declare=None) -> None:
        """Append a copy of forward `node` that reads mapping[i] where `mapping` has its input i, with fresh output
        names (named tag/...), recorded in `mapping`. Each new output gets the type of the one it copies, or
        `declare(original, new)` decides (a copy run on other shapes)."""
        copy = NodeProto()
        copy.CopyFrom(node)
        copy.name = self.fresh(f"{tag}/{node.op_type.lower()}")
        copy.input[:] = [mapping.get(i, i) for i in node.input]
        outs = []
        for o in node.output:
            if not o:
                outs.append("")
                continue
            new = self.fresh(f"{tag}/{o.rsplit('/', 1)[-1]}")
            mapping[o] = new
            (declare or self.copy_type)(o, new)
            outs.append(new)
        copy.output[:] = outs
        self.graph.node.append(copy)

    def pixels(self, tensor: str) -> str:
        """A (1, C, H, W) tensor as (H * W, C), one pixel's channels per row: made once per tensor (on a CPU engine's
        blocked-layout path this is one reorder of the tensor, which its readers then share)."""
        if tensor not in self._pixels:
            channels = self.shape(tensor)[1]
            self._pixels[tensor] = self.op("Reshape", [self.op("Transpose", [tensor], "pixels_nhwc", perm=[0, 2, 3, 1]),
                                                       self.ints([-1, channels])], "pixels")
        return self._pixels[tensor]

    def pixels_made(self, tensor: str) -> str | None:
        """`pixels(tensor)` where it was made, else None."""
        return self._pixels.get(tensor)

    def add_output(self, tensor: str, shape, elem_type=onnx.TensorProto.FLOAT) -> None:
        self.graph.output.append(helper.make_tensor_value_info(tensor, elem_type, list(shape)))

    def add_input(self, name: str, shape, elem_type=onnx.TensorProto.FLOAT) -> str:
        if name in self._names:
            raise ExplainError(f"graph already has a tensor named {name!r}")
        self._names.add(name)
        self.graph.input.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name


def _keep_read(graph: onnx.GraphProto, names) -> set[str]:
    """Keep, in place, only the nodes the tensors `names` depend on; returns every tensor those nodes read, and
    `names`."""
    needed, keep = set(names), []
    for node in reversed(graph.node):  # nodes are topologically sorted
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    if len(keep) < len(graph.node):
        graph.ClearField("node")
        graph.node.extend(reversed(keep))
    return needed


def drop_unread(graph: onnx.GraphProto) -> None:
    """Remove, in place, every node no graph output depends on (a product a later rule read past, see
    rules/relevance.py `divided`; a zero made for a branch that needed none), and the constants only those read:
    engines would compute the nodes anyway. Inputs, and constants no node read before, stay."""
    read_before = {i for n in graph.node for i in n.input}
    needed = _keep_read(graph, [o.name for o in graph.output])
    dropped = read_before - needed
    if dropped:
        kept = [t for t in graph.initializer if t.name not in dropped]
        del graph.initializer[:]
        graph.initializer.extend(kept)


def keep_outputs(graph: onnx.GraphProto, names) -> None:
    """Prune `graph` in place to the outputs `names`: drop the other outputs and every node, initializer,
    input and shape annotation none of them depends on. Engines run every node of a graph whatever the
    caller fetches (ONNX Runtime) or compute every output (OpenVINO): what nobody reads must not be in it."""
    names = list(dict.fromkeys(names))
    have = {o.name for o in graph.output}
    missing = [n for n in names if n not in have]
    if missing:
        raise ExplainError(f"the graph has no output(s) {missing}; it has {sorted(have)}")
    kept_outputs = [o for o in graph.output if o.name in set(names)]
    del graph.output[:]
    graph.output.extend(kept_outputs)
    needed = _keep_read(graph, names)
    for repeated in (graph.initializer, graph.input, graph.value_info):
        kept = [t for t in repeated if t.name in needed]
        del repeated[:]
        repeated.extend(kept)

"""Backward rules, one per ONNX op type, gathered into one table (like JAX's transpose rules), and the
propagations that choose among them (like Zennit's composites).

A rule receives a `RuleContext` and returns, for each input of the node, the name of
its cotangent tensor or None (input not on the path, or not differentiable). Cotangent
tensors have the forward tensor's shape with axis 0 replaced by the seed batch: class c
(or box k) rides in batch row c, while the forward pass itself has batch 1.

`RULES` is the gradient: each op's vector-Jacobian product. A `Propagation` maps op types to
other rules where a method propagates something else than the gradient (guided backprop's ReLU,
LRP's relevance through linear layers, ...), separately for the linear layers that read the model
input (`first`: Zennit's "first layer", where composites put Flat or z-box); the ops it does not
name keep their gradient rule where that rule means the same thing for the method (`inherits`: all of
them for the gradient's variants; for LRP only the ops that move relevance without creating or
destroying it, for DeepLIFT only the linear ones), and any other op on the path fails the build naming
the op, its node and the method. So the plain gradient, guided backprop, DeepLIFT and each LRP
variant are each a table, and no rule asks which method is running.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from onnx import NodeProto, helper

from .._graph import Builder, ExplainError

RULES: dict[str, Callable[["RuleContext"], list]] = {}


def rule(*op_types: str):
    """Register the decorated function as the backward rule of `op_types`."""
    def register(fn):
        for op in op_types:
            RULES[op] = fn
        return fn
    return register


def node_attr(node: NodeProto, name: str, default=None):
    """A node's attribute `name` as a Python value, or `default` where it has none."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def node_attrs(node: NodeProto) -> dict:
    """All of a node's attributes as Python values (to make another node of its type with them)."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


@dataclass
class RuleContext:
    node: NodeProto
    b: Builder
    out_cots: list  # per node output: cotangent tensor name or None
    needs: list  # per node input: whether its cotangent is wanted
    batch: int  # seed batch size

    @property
    def g(self) -> str:
        """The cotangent of the first output (zeros if it has none but another output does)."""
        return self.out_cots[0] if self.out_cots[0] is not None else self.zeros_cot(self.node.output[0])

    def attr(self, name: str, default=None):
        return node_attr(self.node, name, default)

    def x(self, i: int = 0) -> str:
        return self.node.input[i]

    def y(self, i: int = 0) -> str:
        return self.node.output[i]

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.b.shape(tensor)

    def cot_shape(self, tensor: str) -> tuple[int, ...]:
        """Shape of a forward tensor's cotangent: batch axis replaced by the seed batch."""
        s = self.b.shape(tensor)
        return (self.batch,) + s[1:] if s else s

    def zeros_cot(self, tensor: str) -> str:
        # an Expand of a scalar, not a full-size zero initializer that would bloat the model file
        return self.b.op("Expand", [self.b.const(0.0, "zero"), self.b.ints(self.cot_shape(tensor))], "zeros")

    def fail(self, problem: str) -> ExplainError:
        return ExplainError(f"{self.node.op_type} node {self.node.name!r}: {problem}")

    def unbroadcast(self, g: str, out_tensor: str, in_tensor: str) -> str:
        """Sum a cotangent of `out_tensor`'s shape down to `in_tensor`'s (numpy broadcasting).

        The batch axis is never summed: on-path tensors have forward batch 1 and their
        cotangents keep one row per seed.
        """
        out_s, in_s = self.cot_shape(out_tensor), self.shape(in_tensor)
        if len(in_s) != len(out_s):
            raise self.fail(f"input {in_tensor!r} of rank {len(in_s)} is broadcast to rank {len(out_s)} on the "
                            "path to a target; only same-rank broadcasting is supported")
        axes = [i for i, d in enumerate(in_s) if i > 0 and d == 1 and out_s[i] != 1]
        if not axes:
            return g
        return self.b.reduce("ReduceSum", g, axes, keepdims=1, hint="unbroadcast")


LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Propagation:
    """Which rule propagates through which node: `layers` (op type -> rule) over the gradient table, `first` for
    the linear layers that read the model input directly (through shape-only ops)."""

    name: str
    layers: Mapping[str, Callable] = field(default_factory=dict)
    first: Mapping[str, Callable] = field(default_factory=dict)
    inherits: frozenset[str] | None = None  # gradient rules kept for the ops `layers` does not name; None: all

    def rule(self, op_type: str, first: bool = False) -> Callable | None:
        if first and op_type in self.first:
            return self.first[op_type]
        if op_type in self.layers:
            return self.layers[op_type]
        return RULES.get(op_type) if self.inherits is None or op_type in self.inherits else None

    def known(self) -> list[str]:
        """The op types this propagation has a rule for."""
        kept = set(RULES) if self.inherits is None else set(RULES) & self.inherits
        return sorted(kept | set(self.layers))


GRADIENT = Propagation("gradient")
SHAPE_ONLY = ("Identity", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Cast", "Pad")


def first_layers(graph) -> set[str]:
    """Names of the linear nodes that read a graph input directly or through shape-only ops (the model's first
    layer, where LRP composites put their own rule)."""
    inputs = {v.name for v in graph.input}
    reach, first = set(inputs), set()
    for node in graph.node:  # topologically sorted
        if node.op_type in SHAPE_ONLY and node.input and node.input[0] in reach:
            reach.update(node.output)
        elif node.op_type in LINEAR_OPS and node.input and node.input[0] in reach:
            first.add(node.name or node.output[0])
    return first


# The rule modules register themselves on import.
from . import activation, arithmetic, conv, pool, shape, spatial  # noqa: E402,F401
from . import relevance  # noqa: E402,F401  (rules the propagations choose; registers nothing)

"""The model's forward run again on another input, in the same graph: SmoothGrad's noisy copies, integrated
gradients' points along the path, DeepLIFT's reference.

    mapping = forward_copy(b, "input", noisy, ["logits"], "smoothgrad0")
    mapping["logits"]        # the logits of the model run on `noisy`

Only the nodes between the input and `outputs` are copied; weights and every tensor that does not depend on the
input are shared, so the model file grows by nodes, not by weights. The copy's tensors get the shapes of the
tensors they copy (a copy runs at the forward's batch of 1), so the op rules can differentiate through it.
"""

from __future__ import annotations

from ._graph import Builder, ExplainError
from ._reverse import influences


def forward_copy(b: Builder, input_name: str, replacement: str, outputs: list[str], tag: str) -> dict[str, str]:
    """Append a copy of the nodes between `input_name` and `outputs` that reads `replacement` (same shape) where
    the original reads `input_name`; returns original tensor -> copy tensor for every copied tensor."""
    b.copy_type(input_name, replacement)  # built from the input by element-wise ops: the input's shape
    graph = b.graph
    needed = influences(graph, set(outputs))  # every tensor the outputs are computed from
    mapping = {input_name: replacement}
    for node in list(graph.node):  # topologically sorted; the list is fixed before copies are appended
        if not any(i in mapping for i in node.input) or not any(o in needed for o in node.output):
            continue
        if any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute):
            raise ExplainError(f"{node.op_type} node {node.name!r} holds a subgraph: it cannot be copied for a "
                               "second forward")
        b.copy_node(node, mapping, tag)
    missing = [o for o in outputs if o not in mapping]
    if missing:
        raise ExplainError(f"outputs {missing} do not depend on {input_name!r}: nothing to run again")
    return mapping

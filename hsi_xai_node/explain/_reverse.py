"""The ONNX-to-ONNX reverse-mode pass: append the backward sub-graph from seeded outputs to targets.

Only nodes on a path between a target and a seeded output are differentiated; each
goes through its rule in `rules.RULES`, in reverse topological order, and cotangents
reaching a tensor from several consumers are summed. The forward graph is untouched:
the backward nodes, their constants and the requested gradients are appended.
"""

from __future__ import annotations

import onnx

from ._graph import Builder, ExplainError
from ._onehot import ONE_HOT_RULES, OneHot, OneHotContext, dense
from ._windows import PER_ROW_WEIGHT_OPS, Placed, Regions, add_window, local_regions, same_heads, windowed_copy, \
    windowed_group_copy
from .rules import GRADIENT, RULES, Propagation, RuleContext, first_layers

BACKWARD_SCOPE = "backward"

# ops each of whose output elements is a copy of one input element (MaxPool: its window's winner), whose gradient
# takes each output element's cotangent back to the element it copied
COPYING = frozenset({"Identity", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Concat",
                     "MaxPool"})


def _closure_forward(graph, start: set[str]) -> set[str]:
    reach = set(start)
    for node in graph.node:  # ONNX nodes are topologically sorted
        if any(i in reach for i in node.input if i):
            reach.update(node.output)
    return reach


def influences(graph, start: set[str], stop: set[str] = frozenset()) -> set[str]:
    """Every tensor on which one of `start` depends (`start` included), not looking behind the tensors `stop`."""
    reach = set(start)
    for node in reversed(graph.node):
        if any(o in reach and o not in stop for o in node.output):
            reach.update(i for i in node.input if i)
    return reach


def _factor(b: Builder, cot: str, forward: str) -> str | None:
    """A where `cot` is the product A * `forward` (LRP's rules hand relevance on so: a layer's backward times its
    input, a forward tensor), else None."""
    pair = b.factors(cot)
    if pair is None or forward not in pair:
        return None
    return pair[1] if pair[0] == forward else pair[0]


def _broadcast_parts(b: Builder, parts: list[str], tensor: str, batch: int) -> list[str]:
    """The cotangents of `tensor` from its consumers, to be summed, each Expand to the cotangent's shape (a mean's
    or a global average pool's backward: the detector's squeeze-excitation blocks) replaced by what it expands, which
    the Add then broadcasts into the sum of the others: one full-size copy fewer written and read per row.
    Unchanged where every part is such an Expand."""
    shape = [batch, *b.shape(tensor)[1:]]
    small = {}
    for p in parts:
        maker = b.producer(p)
        target = None if maker is None or maker.op_type != "Expand" else b.constant(maker.input[1])
        if target is not None and target.tolist() == shape:
            small[p] = maker.input[0]
    full = [p for p in parts if p not in small]
    return full + [small[p] for p in parts if p in small] if full else parts


def _copied_products(b: Builder, node, out_cots: list, needs: list[bool], batch: int, fn) -> list | None:
    """A copying op's input cotangents when its output's is A * y, y its own output: the op's gradient of A times
    each input x, the same values (where the gradient puts A's element, x holds the element y copied). The product
    stays the last factor, for the next rule to take apart (relevance.divided: the division at the forward's batch)
    and for the sums of several consumers' cotangents to share (`append_backward`'s total). None where this does
    not apply."""
    if node.op_type not in COPYING or fn is not RULES.get(node.op_type) or len(out_cots) != 1 or out_cots[0] is None:
        return None
    a = _factor(b, out_cots[0], node.output[0])
    if a is None:
        return None
    cots = fn(RuleContext(node=node, b=b, out_cots=[a], needs=needs, batch=batch))
    return [None if g is None else b.op("Mul", [g, x], "copied_product") for g, x in zip(cots, node.input)]


def append_backward(b: Builder, seeds: dict[str, str], targets: list[str], batch: int,
                    propagation: Propagation = GRADIENT, one_hot_rows: bool = False,
                    stop_at_targets: bool = False, placed: bool = False) -> dict[str, str | Placed]:
    """Differentiate `sum(seed * output)` for each seed row with respect to each target.

    `seeds` maps forward output tensors to cotangent tensors already in the graph
    (shape: the output's with axis 0 = `batch`), or to `OneHot` cotangents (one element per row, _onehot.py). Returns target -> gradient tensor
    name (shape: the target's with axis 0 = `batch`). With another `propagation` than the
    gradient, what flows back is that propagation's quantity (relevance, a guided gradient...),
    each op through the rule the propagation maps it to.

    `one_hot_rows`: each seed row is non-zero at one element (a detector's boxes): the convolutional heads behind
    element-moving ops are then differentiated on a window around each row's pixel (_windows.py), exactly, where
    the propagation's rules there are the gradient's; and a OneHot seed goes through the element-moving ops after
    it as one element per row (_onehot.py), not as dense tensors.

    `stop_at_targets`: nothing flows on behind a target: each target's gradient is the one through the paths that
    meet no other target (a detector's pyramid levels as targets: each box's score reaches its own level's feature
    through its head, and no further). `placed`: a target whose cotangent is only windows is returned as the
    windows (`Placed`), not scattered into a full map of zeros, for a reader that needs no more (Grad-CAM's mean).
    """
    graph = b.graph
    produced = {o for n in graph.node for o in n.output} | {v.name for v in graph.input}
    for t in list(seeds) + list(targets):
        if t not in produced:
            raise ExplainError(f"tensor {t!r} is not in the graph")
    forward = _closure_forward(graph, set(targets))
    backward = influences(graph, set(seeds), set(targets) if stop_at_targets else set())
    on_path = forward & backward
    for t in targets:
        if t not in backward:
            raise ExplainError(f"target {t!r} does not influence the seeded outputs {sorted(seeds)}")
    cots: dict[str, list[str]] = {o: [s] for o, s in seeds.items()}
    first = first_layers(graph) if propagation.first else set()
    # windows where the propagation differentiates the region as the gradient does (guided backprop's ReLU rule
    # changes nothing in a head without ReLUs); LRP's and DeepLIFT's rules there read more than the window holds
    found = local_regions(b, seeds, targets, on_path) if one_hot_rows else Regions([], frozenset(), frozenset())
    as_gradient = [r for r in found.regions
                   if all(propagation.rule(n.op_type) is RULES.get(n.op_type) for n in r.nodes)]
    per_row_ok = all(propagation.rule(op) is RULES.get(op) for op in PER_ROW_WEIGHT_OPS)
    # a head shared by several levels is one copy on K rows (_windows.same_heads); a region of its own is windowed
    # where the window is small beside its map
    groups = [g for g in same_heads(b, as_gradient) if len(g.regions) > 1 or g.regions[0].alone]
    regions = [r for g in groups for r in g.regions]
    in_region = {id(n) for r in regions for n in r.nodes}
    region_of = {id(r.nodes[-1]): r for r in regions}  # by the node that makes its output
    group_of = {id(r): g for g in groups for r in g.regions}
    windowed: set[int] = set()  # the regions whose backward is in the graph

    def one_hot(tensor: str) -> OneHot | None:
        parts = cots.get(tensor)
        return parts[0] if parts and len(parts) == 1 and isinstance(parts[0], OneHot) else None

    def total(tensor: str) -> str | None:
        parts = cots.get(tensor)
        if not parts:
            return None
        if len(parts) > 1 or not isinstance(parts[0], str):
            # full-size cotangents added; a window's added into that sum where it lies (or into zeros)
            full = [dense(b, p, b.shape(tensor), batch) if isinstance(p, OneHot) else p for p in parts
                    if not isinstance(p, Placed)]
            # every part A_k * tensor (relevance from each consumer, as LRP's rules give it): (sum A_k) * tensor
            factors = [_factor(b, p, tensor) for p in full]
            if len(full) > 1 and all(f is not None for f in factors):
                full = [b.op("Mul", [b.add_all(factors, "accumulate"), tensor], "accumulated_product")]
            acc = b.add_all(_broadcast_parts(b, full, tensor, batch), "accumulate") if full else None
            for placed in (p for p in parts if isinstance(p, Placed)):
                acc = add_window(b, acc, placed)
            cots[tensor] = [acc]
        return cots[tensor][0]

    with b.scope(BACKWARD_SCOPE):  # every node of the backward pass is named xai/backward/...
        forward_nodes = list(graph.node)  # the backward nodes we append are not visited
        # the tail first (any order that meets every consumer before its producer will do): each region's output
        # then has its whole cotangent when the first region of a group is met
        order = sorted(reversed(forward_nodes), key=lambda n: not (n.output and n.output[0] in found.early))
        for node in order:
            if not any(o in on_path for o in node.output):
                continue
            if id(node) in in_region:
                region = region_of.get(id(node))
                if region is None or id(region) in windowed:
                    continue
                group = group_of[id(region)]
                hots = [one_hot(r.output) for r in group.regions]
                if len(group.regions) > 1 and per_row_ok and all(h is not None for h in hots) and \
                        all(r.output in found.ready for r in group.regions):  # (every cotangent there complete)
                    for r, share in zip(group.regions, _windowed_group(b, group, hots, batch, propagation)):
                        cots.setdefault(r.source, []).append(share)
                    windowed.update(id(r) for r in group.regions)
                    continue
                g = one_hot(region.output) or total(region.output)
                if g is not None:
                    cots.setdefault(region.source, []).append(_windowed(b, region, g, batch, propagation))
                windowed.add(id(region))
                continue
            needs = [bool(i) and i in on_path for i in node.input]
            if not any(needs):
                continue
            single = one_hot(node.output[0]) if len(node.output) == 1 else None
            if single is not None and node.op_type in ONE_HOT_RULES and \
                    propagation.rule(node.op_type) is RULES.get(node.op_type):  # moved as one element per row
                in_cots = ONE_HOT_RULES[node.op_type](OneHotContext(node=node, b=b, cot=single, needs=needs))
            else:
                out_cots = [total(o) for o in node.output]
                if all(c is None for c in out_cots):
                    continue
                fn = propagation.rule(node.op_type, (node.name or node.output[0]) in first)
                if fn is None:
                    hit = next((t for t in targets if any(i in _closure_forward(graph, {t}) for i in node.input if i)),
                               targets[0])
                    known = propagation.known()
                    raise ExplainError(
                        f"no backward rule for op {node.op_type!r} (node {node.name!r}) on the path to target {hit!r} "
                        f"({propagation.name}); supported ops: {', '.join(known)}")
                in_cots = _copied_products(b, node, out_cots, needs, batch, fn) or \
                    fn(RuleContext(node=node, b=b, out_cots=out_cots, needs=needs, batch=batch))
            for tensor, need, cot in zip(node.input, needs, in_cots):
                if need and cot is not None:
                    cots.setdefault(tensor, []).append(cot)
        grads = {}
        for t in targets:
            parts = cots.get(t) or []
            if placed and len(parts) == 1 and isinstance(parts[0], Placed):
                grads[t] = parts[0]
                continue
            g = total(t)
            if g is None:
                raise ExplainError(f"no gradient reached target {t!r}")
            grads[t] = g
    return grads


def _windowed(b: Builder, region, g: str, batch: int, propagation: Propagation) -> Placed:
    """The region's backward on each row's window (added to the source's other cotangents where it lies)."""
    crop, output, seed, windows = windowed_copy(b, region, g, batch)
    inner = append_backward(b, {output: seed}, [crop], batch, propagation)
    return Placed(inner[crop], windows, b.shape(region.source)[1])


def _windowed_group(b: Builder, group, hots: list[OneHot], batch: int, propagation: Propagation) -> list[Placed]:
    """A head shared by the regions of `group` differentiated once on K rows, each row on its own region's window;
    each region's share placed in its windows (the same values, counted only in the rows at it: `Placed.rows`)."""
    crop, output, seed, placing = windowed_group_copy(b, group, hots, batch)
    g = append_backward(b, {output: seed}, [crop], batch, propagation)[crop]
    return [Placed(g, windows, b.shape(r.source)[1], rows=mask) for r, (windows, mask) in zip(group.regions, placing)]


def gradients(model: onnx.ModelProto, seeds: dict[str, str], targets: list[str], batch: int,
              expose: bool = True) -> tuple[onnx.ModelProto, dict[str, str]]:
    """Copy `model`, append the backward pass, optionally expose gradients as graph outputs."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    b = Builder(out)
    grads = append_backward(b, seeds, targets, batch)
    if expose:
        for t, g in grads.items():
            b.add_output(g, (batch,) + b.shape(t)[1:])
    return out, grads

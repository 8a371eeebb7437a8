"""Which tensors of an imported segmentation graph the explanations target, each with the reason it was chosen.

* `penultimate`: the tensor the last convolution before the logits reads (what paper 000's activation map,
  the CAM family and the node's default overlay explain). A trailing spatial Resize (mmsegmentation's decode
  head resizes its logits to the input) and Transposes are looked through. A 1x1 head with nothing after it
  has its gradient in closed form (no backward pass); a 1x1 head behind a Resize keeps the activation map
  (Resize(W A + b) = Resize(W A) + b) but its CAMs take the backward pass; a 3x3 head (segmentation_models_pytorch)
  has no activation map and its CAMs take the backward pass.
* `bottleneck`: the lowest-resolution feature map between input and logits (the deepest, widest one of
  those), where coarse CAMs look.
* `second_conv_block`: the second activation at the input's resolution: the end of the first conv block of
  a U-Net (HSI-Drive's, mmsegmentation's and segmentation_models_pytorch's all open with two conv + ReLU).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..model_card import ModelError

_ACTIVATIONS = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Elu", "Selu", "PRelu")
_PASS_THROUGH = ("Transpose", "Identity")


@dataclass(frozen=True)
class Choice:
    role: str
    tensor: str
    shape: tuple
    why: str


@dataclass(frozen=True)
class HeadFacts:
    kernel: tuple[int, int]
    resize_after: bool

    @property
    def activation_map(self) -> bool:
        """Paper 000's conservative map needs a 1x1 head (a Resize after it is fine)."""
        return self.kernel == (1, 1)

    @property
    def closed_form(self) -> bool:
        return self.kernel == (1, 1) and not self.resize_after


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _kernel(node: onnx.NodeProto, model: onnx.ModelProto) -> tuple[int, int]:
    shape = next((a.ints for a in node.attribute if a.name == "kernel_shape"), None)
    if shape:
        return tuple(shape)
    weight = next(t for t in model.graph.initializer if t.name == node.input[1])
    return tuple(weight.dims[2:])


def find_head(model: onnx.ModelProto, logits: str, penultimate: str | None) -> tuple[str, HeadFacts, str]:
    """(penultimate tensor, head facts, why) for the logits tensor."""
    producers = _producers(model)
    initialisers = {t.name for t in model.graph.initializer}
    node, resized, walked = producers.get(logits), False, []
    while node is not None and (node.op_type in _PASS_THROUGH or node.op_type == "Resize"):
        walked.append(node.op_type)
        resized |= node.op_type == "Resize"
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Conv" or node.input[1] not in initialisers:
        found = node.op_type if node is not None else "the graph input"
        if penultimate is None:
            raise ModelError(f"no convolution with constant weights produces the logits {logits!r} (found {found} "
                             "before them): name the layer to explain with --penultimate TENSOR")
        return penultimate, HeadFacts((0, 0), resized), "given with --penultimate"
    facts = HeadFacts(_kernel(node, model), resized)
    through = f" (through {', '.join(walked)})" if walked else ""
    if penultimate is not None and penultimate != node.input[0]:
        return penultimate, HeadFacts((0, 0), True), "given with --penultimate (not the head conv's input)"
    kind = f"{facts.kernel[0]}x{facts.kernel[1]}"
    how = ("closed-form gradient, no backward pass" if facts.closed_form else
           "activation map exact, CAMs by the backward pass" if facts.activation_map else
           "no activation map, CAMs by the backward pass")
    return node.input[0], facts, f"input of the final {kind} conv {node.name!r}{through}: {how}"


def _on_path(model: onnx.ModelProto, source: str, target: str) -> list[onnx.NodeProto]:
    """Nodes (in graph order) that depend on `source` and that `target` depends on."""
    after, tensors = [], {source}
    for n in model.graph.node:
        if any(i in tensors for i in n.input):
            tensors.update(n.output)
            after.append(n)
    needed, keep = {target}, []
    for n in reversed(after):
        if any(o in needed for o in n.output):
            needed.update(n.input)
            keep.append(n)
    return list(reversed(keep))


def choose_layers(model: onnx.ModelProto, shapes: dict[str, tuple], input_name: str, logits: str,
                  penultimate: str | None = None) -> tuple[list[Choice], HeadFacts]:
    pen, head, why = find_head(model, logits, penultimate)
    if pen not in shapes:
        raise ModelError(f"--penultimate {pen!r} is not a tensor of the graph")
    in_hw = tuple(shapes[input_name][2:])
    choices = [Choice("penultimate", pen, shapes[pen], why)]
    path = _on_path(model, input_name, logits)
    maps = [(o, shapes[o]) for n in path for o in n.output if len(shapes.get(o, ())) == 4 and n.op_type != "Transpose"]
    if maps:
        area = min(s[2] * s[3] for _, s in maps)
        smallest = [(o, s) for o, s in maps if s[2] * s[3] == area]
        name, shape = max(reversed(smallest), key=lambda m: m[1][1])  # the widest; of equals the last (block end)
        choices.append(Choice("bottleneck", name, shape, f"smallest feature map on the path ({shape[2]}x{shape[3]}, "
                                                         f"{shape[1]} channels)"))
    acts = [n.output[0] for n in path if n.op_type in _ACTIVATIONS and tuple(shapes.get(n.output[0], ())[2:]) == in_hw]
    convs = [n.output[0] for n in path if n.op_type == "Conv" and tuple(shapes.get(n.output[0], ())[2:]) == in_hw]
    early = acts[1] if len(acts) > 1 else (convs[1] if len(convs) > 1 else None)
    if early is not None:
        kind = "activation" if len(acts) > 1 else "conv output"
        choices.append(Choice("second_conv_block", early, shapes[early],
                              f"second {kind} at the input's {in_hw[0]}x{in_hw[1]}: the first conv block's output"))
    return choices, head

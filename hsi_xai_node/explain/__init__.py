"""The explain compiler: gradients and CAMs appended to an ONNX graph, for TensorRT or ONNX Runtime.

Public API (the modules behind it are private):

    gradients(model, seeds, targets, batch)  append the backward pass (reverse mode, one rule per op)
    RULES                                   op type -> backward rule
    ExplainError                            raised for anything the compiler cannot build
"""

from ._graph import Builder, ExplainError
from ._reverse import append_backward, gradients
from .rules import RULES

__all__ = ["Builder", "ExplainError", "RULES", "append_backward", "gradients"]

"""The explain compiler: gradients and CAMs appended to an ONNX graph, for TensorRT or ONNX Runtime.

Public API (the modules behind it are private):

    build_segmentation_explainer(...)       all-class CAMs and activation maps appended to a U-Net graph
    SegmentationExplainConfig               methods, target layers, seed, top-k, upsample, uint8
    build_detection_explainer(...)          the per-box CAM family, input attributions and camera attributions for
                                            the top-K boxes
    CAMS                                    the CAM table: method -> one function from (A, dS/dA) to the maps
    METHODS, CAM_METHODS, BOX_METHODS       method names for segmentation and for detector boxes
    BOX_CAMS, BOX_ATTRIBUTIONS              box method -> its CAM / input attribution
    BOX_LEVEL, box_levels                   the layer "each box at its own pyramid level", and its levels
    LEVEL_PART                              method suffix of a BOX_LEVEL map's part at one level, at its size
    INPUT_METHODS                           the white-box input attributions (paper 003): method -> how it is built
    LrpOptions, PathOptions                 LRP's epsilon/gamma/stabiliser; SmoothGrad, integrated gradients and
                                            DeepLIFT settings (samples, noise, steps, quadrature, baseline)
    COMPOSITES, composite(...)              which rule applies where for each white-box propagation
    conservation_residual(total, target)    |total - target| / |target| of a conserving input attribution
    conservativeness_residual(...)          does a map's sum over the seed region equal the logit sum?
    conservativeness_residual_of_labels(...)  the same with the regions given as a label image
    gradients(model, seeds, targets, batch)  the reverse-mode pass itself (one rule per op)
    keep_outputs(graph, names)              prune a graph to the outputs a caller reads
    linear_resize_matrix(n_in, n_out)       the maps' resize to the input along one axis, as a matrix
    multiply_adds(model)                    a graph's Conv/ConvTranspose/MatMul/Gemm multiply-adds
    RULES                                   op type -> backward rule
    check_tensorrt / assert_tensorrt_compatible   static check against the TensorRT 10 ONNX parser
    ExplainError                            raised for anything the compiler cannot build
"""

from ._attributions import INPUT_METHODS, PathOptions, conservation_residual
from ._cams import CAMS
from ._composites import COMPOSITES, LrpOptions, composite
from ._conservativeness import conservativeness_residual, conservativeness_residual_of_labels
from ._cost import multiply_adds
from ._detection import (BOX_ATTRIBUTIONS, BOX_CAMS, BOX_LEVEL, BOX_METHODS, LEVEL_PART, DetectionExplainConfig,
                         box_levels, build_detection_explainer)
from ._graph import Builder, ExplainError, keep_outputs
from ._reverse import append_backward, gradients
from ._maps import ExplainGraph, MapOutput, linear_resize_matrix
from ._segmentation import (CAM_METHODS, METHODS, SEEDS, SegmentationExplainConfig,
                            build_segmentation_explainer, has_activation_map)
from ._trt_check import assert_tensorrt_compatible, check_tensorrt
from .rules import RULES

__all__ = ["BOX_ATTRIBUTIONS", "BOX_CAMS", "BOX_LEVEL", "BOX_METHODS", "CAMS", "CAM_METHODS", "COMPOSITES", "INPUT_METHODS",
           "LEVEL_PART", "LrpOptions", "PathOptions", "assert_tensorrt_compatible", "box_levels", "check_tensorrt", "DetectionExplainConfig",
           "build_detection_explainer", "Builder", "ExplainError", "ExplainGraph", "METHODS", "MapOutput", "RULES",
           "SEEDS", "SegmentationExplainConfig", "append_backward", "build_segmentation_explainer", "composite", "has_activation_map",
           "conservation_residual", "conservativeness_residual", "conservativeness_residual_of_labels", "gradients",
           "keep_outputs", "linear_resize_matrix", "multiply_adds"]
